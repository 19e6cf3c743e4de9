#!/usr/bin/env bash
# The README's test command (and CI's): set up .venv if needed, then ruff, mypy and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check pipeline extractors workflows data_manifest tests
.venv/bin/mypy  # packages and settings: [tool.mypy] in pyproject.toml
.venv/bin/python -m pytest -q tests "$@"
