# Conveniences over the README's two commands (which need only bash): `make demo`, `make test`, `make bench`.
.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo:
	@bash scripts/demo.sh

test:
	@bash scripts/test.sh

bench: setup
	@bash tests/benchmarks/run_all.sh

clean:
	rm -rf demo-output demo-output.log .pytest_cache .mypy_cache
