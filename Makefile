# The README's commands. `make demo`, `make app` and `make test` set up everything on a fresh machine:
# Debian packages (when missing), .venv (when missing), the project (when pyproject.toml changed).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.partgen-installed
DEB_PACKAGES := libusb-1.0-0 libvulkan1 mesa-vulkan-drivers
BROWSER_PACKAGES := chromium chromium-driver
# The CPU wheel (on local disk here). A plain range would pull the 5 GB CUDA build; on a GPU
# machine run `make TORCH=torch==2.14.1 ...` (see README, GPU installation).
TORCH ?= torch==2.13.0
# The Triton release the CUDA build of torch 2.13.0 requires: CI runs partgen's Triton kernels under
# its interpreter on the CPU with it. A CUDA torch brings its own triton, which is then kept.
TRITON ?= triton==3.7.1
PYTEST_ARGS ?=
APP_ARGS ?=

.PHONY: demo app test bench lint format deb browser venv clean

demo: venv
	$(BIN)/python scripts/demo.py

# the web app on http://127.0.0.1:7860 (partgen-app; `make app APP_ARGS="port=8000"`)
app: venv
	$(BIN)/partgen-app $(APP_ARGS)

test: venv browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: venv
	$(BIN)/python scripts/bench_part_attention.py --tokens 16384 --parts 8 --dist balanced --backward --backends sdpa_loop,partgen_cpu --json bench-part-attention.json

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# install those of the Debian packages $(1) that are missing
define install-debs
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

# Debian packages open3d needs (libusb) and offscreen rendering needs (Vulkan/Mesa)
deb:
	$(call install-debs,$(DEB_PACKAGES))

# Debian's chromium and its driver: the browser tests of partgen-app (tests/app) drive them with selenium
browser:
	$(call install-debs,$(BROWSER_PACKAGES))

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"

# reinstall only when the project's metadata changed
$(STAMP): pyproject.toml kernels/csrc/part_attention_cpu.cpp | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test,app]"
	$(BIN)/python -c "import triton" 2>/dev/null || $(BIN)/python -m pip install -q "$(TRITON)"
	$(BIN)/python -m partgen.kernels || echo "partgen: CPU kernels not built; attention uses another backend (sdpa_loop)"
	touch $@

venv: deb $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
