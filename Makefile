# Shorthands for the README's two commands (tools/demo and tools/test work without make).
.PHONY: demo test
demo:
	@bash tools/demo
test:
	@bash tools/test
