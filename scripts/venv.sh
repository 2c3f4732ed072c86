#!/usr/bin/env bash
# Create .venv (once) with a Python the postgres OS user can run, and install walq.
# archive_command/restore_command run walq as that user, so a pyenv interpreter
# under /root (mode 700) will not do: prefer the system /usr/bin/python3.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
py=python3
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  py=/usr/bin/python3
elif ! python3 -c 'import ensurepip' 2>/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  py=/usr/bin/python3
fi
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null
fi
stamp=".venv/.walq-installed-$extras-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q -e ".[$extras]" --config-settings editable_mode=compat 2>&1 | grep -vE '^(WARNING|  )' || true
  .venv/bin/python -c 'import walq' && touch "$stamp"
fi
