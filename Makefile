# mfclip — the two commands: `make demo` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mfclip-installed
# The torch pair installed first; GPU users may override, e.g. `make TORCH_PINS= install`.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test lint browser clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	@if [ -n "$(TORCH_PINS)" ]; then $(BIN)/pip install $(TORCH_PINS); fi
	$(BIN)/pip install -e ".[train,face,serve,dev]"
	# facenet-pytorch (MTCNN) pins an ancient torch in its metadata: install it without its deps.
	$(BIN)/pip install --no-deps "facenet-pytorch>=2.5"
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the browser test (driven by Playwright with executable_path; never `playwright install`).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = "0" ]; then (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	    || echo "chromium could not be installed: the browser test will fail"; \
	  else echo "not root: install Debian's chromium (apt-get install chromium) for the browser test"; fi; fi

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# MFCLIP_REQUIRE_BROWSER: the browser test fails, rather than skips, when chromium is missing.
test: $(STAMP) browser lint
	MFCLIP_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -n 2 --dist loadfile -q

demo: $(STAMP)
	$(BIN)/mfclip demo --out demo_output

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache .ruff_cache
