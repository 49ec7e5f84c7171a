# Dockyard's entry points. On a fresh Debian 12 machine, as root:
#
#   make demo    set everything up, then run a container that shows what isolates it
#   make test    set everything up, then run the whole test suite (the one CI runs)
#
# Both install only what is missing and are safe to run again:
#   deps   Debian packages (busybox-static, a C compiler, venv and Python headers)
#   venv   .venv with Dockyard installed (editable) and its test/doc tools
#   build  the Cython core, engine/_native/*.so, rebuilt when _native/ changes
#   base   busybox:latest in the default root (/var/lib/dockyard or $DOCKYARD_ROOT)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DOCKYARD := $(VENV)/bin/dockyard
# Debian packages the engine and its tests need: skopeo and umoci are the real
# peer tools the interop tests check our archives against. (runc is the peer of
# the start-up benchmark: `make bench` adds it.)
APT_PACKAGES := busybox-static build-essential python3-venv python3-dev util-linux procps \
                skopeo umoci
NATIVE_SOURCES := $(wildcard _native/*.pyx _native/*.pxd _native/*.c _native/*.h) setup.py

.PHONY: demo test setup deps venv build base bench docs clean

demo: setup
	@$(DOCKYARD) doctor
	@echo
	@echo "== A container, explained: the plan of kernel steps (stderr), then the container itself =="
	@$(DOCKYARD) run --rm --explain -h dockyard-demo -e HOST_NAME="$$(hostname)" \
	    busybox sh -c "$$(cat demo/greeting.sh)"

test: setup
	$(PY) -m pytest

setup: deps build base

deps:
	@missing=""; \
	for pkg in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

venv: $(VENV)/.stamp-venv

$(VENV)/.stamp-venv: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel Cython
	$(PY) -m pip install -q --no-build-isolation -e '.[test]'
	@touch $@

build: $(VENV)/.stamp-build
	@# Byte-compile what changed since (compileall skips up-to-date .pyc files):
	@# PYTHONDONTWRITEBYTECODE would otherwise make every CLI call recompile edited modules.
	@$(PY) -m compileall -q engine >/dev/null

$(VENV)/.stamp-build: $(VENV)/.stamp-venv $(NATIVE_SOURCES)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	$(PY) -c "import engine._native.spawn, engine._native.layers"
	@# Byte-compile now: the CLI starts ~50 ms faster with .pyc files, even
	@# where PYTHONDONTWRITEBYTECODE keeps Python from writing them itself.
	$(PY) -m compileall -q engine >/dev/null
	@touch $@

base: build
	@$(DOCKYARD) images -q busybox:latest | grep -q . || $(DOCKYARD) pull busybox

bench: setup
	@command -v runc >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc)
	$(PY) benchmarks/run.py --record docs/benchmarks.md
	$(PY) benchmarks/scale.py --record docs/benchmarks.md
	@# Builds: docker's classic builder is the peer when a docker daemon answers (not installed here).
	$(PY) benchmarks/build.py --record docs/benchmarks.md
	$(PY) benchmarks/network.py --record docs/benchmarks.md

docs: venv
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf build docs/_build engine/_native/*.so $(VENV)/.stamp-build
