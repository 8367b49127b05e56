#!/usr/bin/env bash
# Installs the Debian data sets the tests read (Fashion-MNIST); run by `make test`.
set -euo pipefail
[ -d /usr/share/datasets/fashion-mnist ] && exit 0
if [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
elif sudo -n true 2>/dev/null; then
  sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
  echo "The tests read Debian's Fashion-MNIST. Install it once with:" >&2
  echo "  sudo apt-get install dataset-fashion-mnist" >&2
  exit 1
fi
