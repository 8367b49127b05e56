#!/usr/bin/env bash
# `make test-engines`: installs what is missing (scripts/engines/install.sh), starts a
# one-node SLURM cluster and a PostgreSQL server under a temp folder
# (scripts/engines/services.sh), runs the tests marked `engines`, and stops every process
# it started, by pid, whatever the outcome. Extra pytest arguments: $PYTEST_ARGS.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PY=${PY:-.venv/bin/python}

bash scripts/engines/install.sh

ENGINES_DIR=$(mktemp -d /tmp/autotimm-engines.XXXXXX)
chmod 755 "$ENGINES_DIR" # the daemons' own users (munge, mysql, postgres) work inside
mkdir -p "$ENGINES_DIR/log"
export ENGINES_DIR
# shellcheck source=scripts/engines/services.sh
source scripts/engines/services.sh

# the tests run in a session of their own: whatever they start (sweeps, Ray's workers,
# which outlive their raylet for a while) is found by that session's id and stopped
TESTS_SID=
stop_tests() {
  [ -n "$TESTS_SID" ] || return 0
  local pids
  pids=$(ps -e -o pid=,sid= | awk -v sid="$TESTS_SID" '$2 == sid {print $1}')
  [ -n "$pids" ] || return 0
  kill -TERM $pids 2>/dev/null || true
  local end=$((SECONDS + 10))
  while [ $SECONDS -lt $end ] && ps -o pid= -p "${pids//$'\n'/,}" >/dev/null; do sleep 0.2; done
  kill -KILL $pids 2>/dev/null || true
}

cleanup() {
  local status=$?
  stop_tests
  stop_services
  if [ $status -ne 0 ]; then
    echo "engines: failed ($status); the services' logs are in $ENGINES_DIR/log" >&2
  else
    rm -rf "$ENGINES_DIR"
  fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started_at=$SECONDS
start_slurm
start_postgres
echo "engines: SLURM ($SLURM_CONF) and PostgreSQL up in $((SECONDS - started_at)) s"

export AUTOTIMM_ENGINES=1 WANDB_MODE=offline
# shellcheck disable=SC2086
setsid "$PY" -m pytest -q -m engines --durations=0 ${PYTEST_ARGS:-} &
TESTS_SID=$!
wait $TESTS_SID
