# campusgps: make install | make test | make demo
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
COMPILED := $(VENV)/.compiled

.PHONY: install test demo test-fast bench clean

install: $(STAMP)

# constraints.txt: the package versions the README's and benchmarks' numbers were measured with
$(STAMP): pyproject.toml constraints.txt
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet --no-compile -e '.[test]' -c constraints.txt
	@touch $(STAMP)

# byte-compile everything on every core, once, for the test suite (its many subprocesses import torch & co.;
# pip would compile file by file: 80 s of a 2-minute install here). `make demo` runs in one process and
# does without: Python compiles what it imports.
$(COMPILED): $(STAMP)
	@$(VPY) -m compileall -qq -j 0 $(VENV)/lib src >/dev/null 2>&1 || true  # some packages ship files that are not Python 3
	@touch $(COMPILED)

test: install $(COMPILED)
	$(VPY) -m pytest -q

test-fast: install $(COMPILED)
	$(VPY) -m pytest -q -m "not slow and not browser"

demo: install
	$(VENV)/bin/campusgps demo

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
