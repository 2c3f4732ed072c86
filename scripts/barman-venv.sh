#!/usr/bin/env bash
# Test-only: Barman and its cloud tools (barman-cloud-wal-restore) in their own venv,
# .venv-barman, so they never mix with walq's dependencies. Idempotent; prints
# the path of barman-cloud-wal-restore on success. Pinned to the Barman that
# shared/docs/wal-reference.md describes, so the suite builds it once for every test
# that runs Barman (WALQ_BARMAN_VENV/WALQ_BARMAN_SPEC choose another, as
# tests/test_barman_codecs.py does for older versions). A lock beside the venv lets
# concurrent callers (pytest -n) wait for one build instead of racing it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${WALQ_BARMAN_VENV:-.venv-barman}"
spec="${WALQ_BARMAN_SPEC:-barman[cloud,snappy,zstandard,lz4]==3.19.1}"
py=python3
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
  py=/usr/bin/python3
fi
stamp="$venv/.walq-barman-$(printf '%s' "$spec" | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  exec 9>"$venv.lock"
  flock 9
  if [ ! -f "$stamp" ]; then  # another caller may have built it while we waited
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    printf '*\n' > "$venv/.gitignore"
    "$venv/bin/pip" install -q --disable-pip-version-check "$spec" >&2
    "$venv/bin/barman-cloud-wal-restore" --version >&2
    touch "$stamp"
  fi
  exec 9>&-
fi
echo "$PWD/$venv/bin/barman-cloud-wal-restore"
