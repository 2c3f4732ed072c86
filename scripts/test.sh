#!/usr/bin/env bash
# The README's test command: venv + services + lint + format check + types + the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh test
bash scripts/services.sh
.venv/bin/ruff check walq workers tests bench scripts
.venv/bin/ruff format --check walq workers tests bench scripts
.venv/bin/mypy walq workers
# Two pytest-xdist workers by default (WALQ_TEST_WORKERS=0 runs the suite in one process):
# most of a test's time is spent waiting on real processes, not computing.
.venv/bin/python -m pytest -q -p no:cacheprovider -n "${WALQ_TEST_WORKERS:-2}" --dist worksteal "$@"
