#!/usr/bin/env bash
# walq's benchmark, one entry point:
#   bash bench/run.sh [--quick] [--rounds N] [--only ROW...] [--sustained] [--publish] ...
# Prepares (once) walq's own .venv, a bench-only .venv-bench (Barman from PyPI,
# matplotlib, py-spy, pyinstrument: never walq's dependencies) and pgBackRest from
# Debian's packages, then runs bench/bench.py. --walq-only skips Barman/pgBackRest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh test
walq_only=0
for a in "$@"; do [ "$a" = "--walq-only" ] && walq_only=1; done
venv=.venv-bench
spec='barman[cloud,snappy,zstandard,lz4]==3.19.1'
extras='matplotlib>=3.8,<4 py-spy>=0.3 pyinstrument>=4'
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
stamp="$venv/.walq-bench-$(printf '%s %s' "$spec" "$extras" | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  if [ "$walq_only" = 1 ]; then
    "$venv/bin/pip" install -q --disable-pip-version-check $extras >&2
  else
    "$venv/bin/pip" install -q --disable-pip-version-check "$spec" $extras >&2
    touch "$stamp"
  fi
fi
if [ "$walq_only" = 0 ] && ! command -v pgbackrest >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >/dev/null; }
  else
    echo "bench: pgbackrest is missing; install it (apt-get install pgbackrest) or pass --walq-only" >&2
    exit 2
  fi
fi
exec .venv/bin/python bench/bench.py "$@"
