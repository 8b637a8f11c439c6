# Entry points for people and CI. Every target that needs Python first makes the venv,
# so each of `make demo` and `make test` works on a fresh machine by itself.
SHELL := /bin/bash
PY_SYS ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
TF_PKG ?= tensorflow-cpu==2.18.1
STAMP  := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup setup-gpu demo demo-cluster test test-unit test-fast lint bench docs cluster-up cluster-down clean

setup: $(STAMP)

# Re-runs only when setup.cfg, this Makefile or the Horovod patch changes. Horovod is built
# once from its source release with our patch (see patches/build-horovod) and the wheel is
# cached outside the checkout, so later setups take seconds.
$(STAMP): setup.cfg Makefile $(wildcard patches/*)
	@command -v $(PY_SYS) >/dev/null || { echo "error: $(PY_SYS) not found; set PY_SYS=/path/to/python3.x (3.11 or 3.12)" >&2; exit 1; }
	@for tool in g++ cmake make patch; do command -v $$tool >/dev/null || { \
	  echo "error: '$$tool' is needed to build Horovod from source. On Debian/Ubuntu: apt-get install -y build-essential cmake patch" >&2; exit 1; }; done
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q "$(TF_PKG)"
	$(PY) -m pip install -q -e '.[test]'
	whl=$$(patches/build-horovod $(PY)) && \
	  $(PY) -m pip install -q --force-reinstall --no-deps "$$whl" && $(PY) -m pip install -q "$$whl"
	$(PY) -c "import horovod.tensorflow as hvd, horovod.common.oasis_patches; assert hvd.gloo_built(), 'horovod built without gloo'"
	if [ -n "$$HOROVOD_GPU_OPERATIONS" ]; then \
	  $(PY) -c "import horovod.tensorflow as hvd; assert hvd.nccl_built(), 'horovod built without NCCL'"; fi
	touch $(STAMP)

# GPU nodes: TensorFlow with CUDA, and Horovod reducing on the GPUs with NCCL (a gloo-only
# build moves every step's gradients through host memory; training warns about it). Needs
# the CUDA toolkit and NCCL headers on the build node (module load cuda nccl, or NCCL_HOME).
setup-gpu:
	rm -f $(STAMP)
	$(MAKE) setup TF_PKG='tensorflow[and-cuda]==2.18.1' HOROVOD_GPU_OPERATIONS=NCCL

# The whole pipeline on a sample brain dataset, 64x64, 2 Horovod ranks, no cluster.
demo: setup
	$(PY) -m oasis_dcgan.cli demo

demo-cluster: setup cluster-up
	source slurm/devcluster.env && $(PY) -m oasis_dcgan.cli demo --executor slurm

cluster-up:
	slurm/devcluster up --nodes 2

cluster-down:
	slurm/devcluster down

# Everything, the dev Slurm cluster included, after the linter (pyproject.toml's [tool.ruff]).
test: setup lint cluster-up
	source slurm/devcluster.env && $(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

# The unit tier alone (nothing trains; under 2 minutes), and everything but the cluster's tier.
test-unit: setup
	$(PY) -m pytest tests/unit

test-fast: setup
	$(PY) -m pytest tests/unit tests/integration

# make bench runs every section; make bench SECTION=overhead one (or several: SECTION="ssim data").
# The sections that need the dev Slurm cluster bring it up themselves.
bench: setup
	$(PY) -m bench.run_all $(SECTION)

# docs/performance.md and bench/results/RESULTS.md, rendered from bench/results/*.json.
docs: setup
	$(PY) -m bench.run_all --from-results

clean:
	rm -rf $(VENV) build *.egg-info
