#!/usr/bin/env bash
# The README's demo command: venv, then a real archive-and-restore round trip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh test
bash scripts/services.sh
exec .venv/bin/python scripts/demo.py
