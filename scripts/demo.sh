#!/usr/bin/env bash
# The README's main job: the whole DAG on the embedded sample dataset (configs/demo.toml), outputs in demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
.venv/bin/t2v run --config configs/demo.toml 2>&1 | tee demo-output.log
echo "make demo: done in $(( $(date +%s) - start )) s; see demo-output/ (report: demo-output/report/index.html)"
