# The two commands a new user types (README):  `make reports`  and  `make test`.
# Both install the locked set of versions (requirements/lock.txt, through requirements/$(MACHINE).txt) into
# a virtual environment of the project's own ($(VENV)), check that it is exactly the locked set, then run.
# MACHINE=cpu (default): torch 2.13.0, the CPU build; MACHINE=gpu: torch and triton as the GPU host has them.
# docs/install.md: the lock, `make lock` (upgrade), `make fresh-check`, the GPU host.
PYTHON ?= python3
VENV ?= .venv
MACHINE ?= cpu
PY := $(VENV)/bin/python
REQ := requirements/$(MACHINE).txt
LOCKED := requirements/lock.txt $(REQ) pyproject.toml
PIP := $(PY) -m pip install -q --disable-pip-version-check -r $(REQ)
LOCK_VENV ?= .venv-lock

.PHONY: setup setup-test browser reports test test-slow lock fresh-check vllm-wheel marlin-record

setup: $(VENV)/.installed-$(MACHINE)
setup-test: $(VENV)/.installed-$(MACHINE)-test

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-installs only when the lock, the machine file or pyproject.toml changed since the last install.
$(VENV)/.installed-$(MACHINE): $(PY) $(LOCKED)
	@echo "installing the locked set into $(VENV) (first time: a few minutes)"
	$(PIP) -e .
	$(PY) -m pip check
	$(PY) scripts/lock.py check --machine $(MACHINE)
	@touch $@

$(VENV)/.installed-$(MACHINE)-test: $(PY) $(LOCKED)
	@echo "installing the locked set with the test extra into $(VENV) (first time: a few minutes)"
	$(PIP) -e '.[test]'
	$(PY) -m pip check
	$(PY) scripts/lock.py check --machine $(MACHINE) --extras test
	@touch $@

# Headless Chromium renders the HTML reports in the test suite (Debian package).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: sudo apt-get install chromium (browser tests will be skipped)"; fi; }

reports: setup
	$(VENV)/bin/mxfp4lab report all

# Default suite: everything except real-size layers and the vLLM-wheel re-derivation (`make test-slow`).
test: setup-test browser
	$(PY) -m pytest -q -m "not slow"

test-slow: setup-test browser vllm-wheel
	MXFP4LAB_RUN_SLOW=1 $(PY) -m pytest -q

# The pinned vLLM wheel (pyproject's marlin extra) in the wheel cache, for the Marlin record's re-derivation.
vllm-wheel: setup
	$(PY) scripts/record_marlin_reference.py --fetch

# Re-write tests/data/marlin_vllm_record.* from that wheel (after changing the vllm pin).
marlin-record: vllm-wheel
	$(PY) scripts/record_marlin_reference.py

# Upgrade: resolve everything anew in a fresh environment (newest releases pyproject.toml admits, holding
# torch and what the GPU host runs: `scripts/lock.py held`, and within what the GPU host's torch requires),
# write requirements/lock.txt, check that requirements/gpu.txt resolves with it, and run the suite there.
# Review and commit the lock's diff. The throwaway environment gets a current pip: it resolves from index
# metadata alone, so the GPU side (CUDA torch and libraries, GBs) is never downloaded.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --disable-pip-version-check -U pip
	$(LOCK_VENV)/bin/python scripts/lock.py gpu-torch-constraints > $(LOCK_VENV)/gpu-torch.txt
	$(LOCK_VENV)/bin/python -m pip install -q --disable-pip-version-check -c $(LOCK_VENV)/gpu-torch.txt \
	  $$($(PYTHON) scripts/lock.py held) -e '.[dev]'
	$(LOCK_VENV)/bin/python scripts/lock.py write
	$(LOCK_VENV)/bin/python scripts/lock.py resolve-gpu
	$(MAKE) test VENV=$(LOCK_VENV)

# A fresh clone of the committed HEAD, a new virtual environment, an empty pip cache: both README
# commands, timed. Run it before closing work that touches dependencies.
fresh-check:
	bash scripts/fresh_check.sh
