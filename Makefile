# `make demo` and `make test` each create and fill .venv on a fresh machine, then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-unit install browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: a CPU wheel that lies on disk. An unpinned torch would pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/promptmux demo

test: $(STAMP) browser
	$(PY) -m pytest -q -p no:cacheprovider

# The playground's browser test drives Debian's Chromium. Installed when we are root with apt;
# elsewhere (or if apt fails) the test is skipped with its reason, never failed.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "chromium could not be installed: the browser test will be skipped"; \
	fi

test-unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

clean:
	rm -rf $(VENV) runs .pytest_cache
