# The two commands a new user types (README):  `make reports`  and  `make test`.
# On a CPU machine torch is pinned to the CPU build this machine's pip provides (no multi-GB CUDA
# download). On a GPU host use environment.yml (or TORCH_SPEC= to keep the installed CUDA torch).
PY ?= python3
TORCH_SPEC ?= torch==2.13.0
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: setup setup-test browser reports test test-slow

setup:
	$(PIP) $(TORCH_SPEC) -e .

setup-test:
	$(PIP) $(TORCH_SPEC) -e '.[test]'

# Headless Chromium renders the HTML reports in the test suite (Debian package).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: sudo apt-get install chromium (browser tests will be skipped)"; fi; }

reports: setup
	mxfp4lab report all

# Default suite: everything except real-size layers (`make test-slow` runs those too).
test: setup-test browser
	$(PY) -m pytest -q -m "not slow"

test-slow: setup-test browser
	MXFP4LAB_RUN_SLOW=1 $(PY) -m pytest -q
