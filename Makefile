# The README's two commands: `make demo` and `make test` (`make test-all`: every test). Each sets up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all lint bench evidence clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml setup.py yolo_etram_hook.pth
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@# editable installs skip setup.py's .pth copy: put the `yolo` command hook in site-packages ourselves
	$(PY) -c "import shutil, sysconfig; shutil.copy('yolo_etram_hook.pth', sysconfig.get_paths()['purelib'])"
	@touch $(STAMP)

demo: setup
	$(PY) main.py

# the fast tier (every module, slow paths at smoke size); test-all adds the tests marked slow (CI runs it)
test: setup
	$(PY) -m pytest -m "not slow"

test-all: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: setup
	$(PY) benchmarks/run_all.py

evidence: setup
	$(PY) benchmarks/evidence_memory.py
	$(PY) benchmarks/evidence_memory.py --models recurrent_more,reset_more

clean:
	rm -rf $(VENV) build *.egg-info
