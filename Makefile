# volmerge: one-command set-up.  `make test` and `make demo` bootstrap
# everything they need on a fresh Debian 12 machine (as root: apt packages).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEB_PACKAGES := runc busybox-static podman skopeo umoci zstd nftables sqlite3 \
                postgresql-15 postgresql-client-15 iproute2 git uidmap mmdebstrap \
                docker-registry apache2-utils openssl strace
export PATH := /usr/lib/postgresql/15/bin:$(PATH)

.PHONY: install deps venv test demo bench lint clean debian-images

install: deps $(STAMP)

# Debian packages: install only what is missing, only when root.
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	    case " $$missing " in *" docker-registry "*) \
	      : "the package enables an open registry on :5000; the tests start their own"; \
	      if command -v systemctl >/dev/null 2>&1; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi;; \
	    esac; \
	  else \
	    echo "warning: missing Debian packages (run as root to install): $$missing" >&2; \
	  fi; \
	fi

# No setuptools in the environment (a Python 3.12 venv has none; the build
# runs in pip's isolated build environment): its distutils-precedence.pth
# runs at every interpreter start (~0.5 ms of a cold `volmerge run`).
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip uninstall -q -y setuptools

# editable_mode=compat: a plain path in a .pth file; setuptools' default
# import finder for the package-dir mapping costs ~15 ms of every start.
$(STAMP): $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install -q -e '.[test,pg16]' --config-settings editable_mode=compat
	# start-up reads bytecode even where PYTHONDONTWRITEBYTECODE is set
	$(PY) -m compileall -q volmerge runtime strategies fixtures >/dev/null
	@touch $(STAMP)

# The Debian test images need the archive (the network), which the test
# session's private network namespace does not have: built (or found in
# the machine's cache) before it.
debian-images: install
	$(PY) -m volmerge.fixtures.debian

# Parallel test sessions (pytest-xdist; tests/conftest.py gives each its own
# namespaces, tmpfs, tag and cgroup parent); TEST_WORKERS=0: one session.
TEST_WORKERS ?= 3
test: install debian-images
	$(PY) -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist worksteal) \
	  $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/volmerge --root $${VOLMERGE_ROOT:-/var/lib/volmerge-demo} demo

bench: install
	$(PY) -m bench

lint: install
	$(PY) -m ruff check --no-cache volmerge runtime strategies fixtures tests bench
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info
