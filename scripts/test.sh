#!/usr/bin/env bash
# The README's test command: venv + services + lint + format check + types + the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh test
bash scripts/services.sh
.venv/bin/ruff check walq workers tests bench scripts
.venv/bin/ruff format --check walq workers tests bench scripts
.venv/bin/mypy walq workers
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
