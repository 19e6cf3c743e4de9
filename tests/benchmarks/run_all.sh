#!/usr/bin/env bash
# Every benchmark, one after the other (not part of the test suite). Each prints its numbers; ratios against the
# limit measured in the same run (raw ffmpeg decode, model forward alone, a numpy copy, an MMT-like transformer)
# are what to compare across machines. Takes roughly 45-75 minutes on 2 cores (bench_long_video: about 15).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
mkdir -p bench-results
for b in decode long_video extract ocr_asr heads search scale; do
  echo "=== bench_$b"
  "$PY" "tests/benchmarks/bench_$b.py" | tee "bench-results/$b.txt"
done
