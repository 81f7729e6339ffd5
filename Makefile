# fovea: `make demo` and `make test` set themselves up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fovea-installed

.PHONY: demo test test-slow venv browser clean

venv: $(STAMP)

# torch/torchvision are pinned to the CPU-usable builds that pip can take from local disk here;
# then the project and its test extras.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || [ "$$(df -Pk . | awk 'NR==2 {print $$4}')" -ge 8388608 ] || { \
	  echo "make: $(CURDIR) has $$(df -Ph . | awk 'NR==2 {print $$4}') free; the venv needs about 8 GiB (torch ships CUDA libraries)." >&2; \
	  echo "      free disk space (old clones, /tmp) and run make again." >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/fovea demo --out runs/demo

# the dashboard tests drive Debian's chromium (a browser download fails offline); install it once
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install chromium' (needed by tests/serve browser tests)" >&2; exit 1; fi; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# includes the line fault fuzzer's sweep (tests/line/test_line_fuzz.py): 300 schedules x 300 items;
# narrow it with e.g. `make test-slow FOVEA_FUZZ_SEEDS=0:20`
FOVEA_FUZZ_SEEDS ?= 0:300
test-slow: $(STAMP)
	OMP_NUM_THREADS=1 FOVEA_FUZZ_SEEDS=$(FOVEA_FUZZ_SEEDS) $(BIN)/python -m pytest -q -m slow

clean:
	rm -rf runs build *.egg-info
