# The two set-up commands of the README: `make demo` (main job on the sample dataset) and `make test`.
.PHONY: setup demo test lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

lint: setup
	.venv/bin/ruff check pipeline extractors workflows data_manifest tests

test: setup lint
	.venv/bin/python -m pytest -q tests

bench: setup
	@bash tests/benchmarks/run_all.sh

clean:
	rm -rf demo-output .pytest_cache
