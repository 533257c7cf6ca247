# Fresh Debian machine: `make demo` runs a small real grid end to end, `make test` runs the suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
APT_PACKAGES := libturbojpeg0-dev libopencv-dev pkg-config postgresql chromium
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_USAGE_STATS_ENABLED := 0
export DO_NOT_TRACK := 1

.PHONY: install system-deps demo test lint bench bench-gpu clean

system-deps: .stamps/system-deps
.stamps/system-deps:
	@mkdir -p .stamps
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@touch $@

install: .stamps/install
.stamps/install: .stamps/system-deps pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# torch/torchvision first, pinned to the releases these machines carry on disk
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[dev]'
	@touch $@

demo: install
	$(VENV)/bin/resnetctl prepare digits --root data/digits
	$(VENV)/bin/resnetctl submit examples/quickstart.yaml
	$(VENV)/bin/resnetctl report --grid quickstart

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(VENV)/bin/pytest

bench: install
	for b in $(filter-out benchmarks/gpu.py,$(wildcard benchmarks/*.py)); do $(PY) $$b || exit 1; done

# the GPU check (one GPU, under 8 minutes): ResNet-50 img/s vs NVIDIA's, packed cells, DDP where 2 GPUs
bench-gpu: install
	$(PY) benchmarks/gpu.py

clean:
	rm -rf .stamps $(VENV) build *.egg-info
