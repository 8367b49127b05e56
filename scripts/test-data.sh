#!/usr/bin/env bash
# Installs the Debian packages the tests use, when missing; run by `make test`:
# Fashion-MNIST (a data set the tests read) and Chromium (the headless browser that loads
# the live dashboard in tests/test_dashboard.py). apt-get as root or with password-free
# sudo; otherwise it says the command (without Chromium the browser test is skipped).
set -euo pipefail

apt_install() {
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "$@" >/dev/null
  elif sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo apt-get install -y -qq "$@" >/dev/null
  else
    return 1
  fi
}

if [ ! -d /usr/share/datasets/fashion-mnist ] && ! apt_install dataset-fashion-mnist; then
  echo "The tests read Debian's Fashion-MNIST. Install it once with:" >&2
  echo "  sudo apt-get install dataset-fashion-mnist" >&2
  exit 1
fi
if ! command -v chromium >/dev/null && ! apt_install chromium; then
  echo "The dashboard's browser test needs Chromium (skipped without it). Install it with:" >&2
  echo "  sudo apt-get install chromium" >&2
fi
