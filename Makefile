# The two entry points of the README. Both install what they need first (idempotent).
.PHONY: setup demo test clean

setup:
	@bash tools/bootstrap.sh

demo: setup
	@.venv/bin/python -m usertcp demo

test: setup
	@.venv/bin/python -m pytest -q -p no:cacheprovider

clean:
	@.venv/bin/python -m usertcp lab down --all 2>/dev/null || true
