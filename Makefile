# Entry points for people and CI. Every target that needs Python first makes the venv,
# so each of `make demo` and `make test` works on a fresh machine by itself.
SHELL := /bin/bash
PY_SYS ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
TF_PKG ?= tensorflow-cpu==2.18.1
HOROVOD_VERSION := 0.28.1
STAMP  := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo demo-cluster test test-fast bench cluster-up cluster-down clean

setup: $(STAMP)

# Re-runs only when setup.cfg or this Makefile changes; pip's wheel cache makes the
# Horovod step a few seconds after the first build.
$(STAMP): setup.cfg Makefile
	@command -v $(PY_SYS) >/dev/null || { echo "error: $(PY_SYS) not found; set PY_SYS=/path/to/python3.x (3.11 or 3.12)" >&2; exit 1; }
	@for tool in g++ cmake make; do command -v $$tool >/dev/null || { \
	  echo "error: '$$tool' is needed to build Horovod from source. On Debian/Ubuntu: apt-get install -y build-essential cmake" >&2; exit 1; }; done
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q "$(TF_PKG)"
	$(PY) -m pip install -q -e '.[test]'
	HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
	HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	  $(PY) -m pip install -q --no-build-isolation horovod==$(HOROVOD_VERSION)
	$(PY) -c "import horovod.tensorflow as hvd; assert hvd.gloo_built(), 'horovod built without gloo'"
	touch $(STAMP)

# The whole pipeline on a sample brain dataset, 64x64, 2 Horovod ranks, no cluster.
demo: setup
	$(PY) -m oasis_dcgan.cli demo

demo-cluster: setup cluster-up
	$(PY) -m oasis_dcgan.cli demo --cluster dev

cluster-up:
	slurm/devcluster up

cluster-down:
	slurm/devcluster down

# Everything, the dev Slurm cluster included.
test: setup cluster-up
	source slurm/devcluster.env && $(PY) -m pytest

# Unit tests only: no cluster.
test-fast: setup
	$(PY) -m pytest -m "not cluster and not slow"

bench: setup cluster-up
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info
