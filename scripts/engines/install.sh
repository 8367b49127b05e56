#!/usr/bin/env bash
# Installs what `make test-engines` needs and this machine lacks: Debian's SLURM (slurmctld,
# slurmd, client, munge, slurmdbd + MariaDB for sacct) and PostgreSQL, and the project's
# `ray` and `postgres` extras into the venv. Root: apt-get it; otherwise says the command.
set -euo pipefail
PY=${PY:-.venv/bin/python}
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server postgresql)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "make test-engines starts SLURM, MariaDB and PostgreSQL as root. Install them with:" >&2
    echo "  sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "installing ${missing[*]} (Debian)"
  apt-get update -qq
  # no daemon may start at install (their init scripts would leave them running):
  # policy-rc.d's 101 tells invoke-rc.d "not now"
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

if ! "$PY" -c "import ray, psycopg, hydra_plugins.hydra_ray_launcher" 2>/dev/null; then
  echo "installing the ray and postgres extras into $(dirname "$(dirname "$PY")")"
  "$PY" -m pip install --quiet -e ".[dev,ray,postgres]"
fi
