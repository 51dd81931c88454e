# Two commands do everything on a fresh Debian machine (as root):
#   make demo   - a throwaway Apache on a loopback port, the exporter run against it
#   make test   - install what the tests need and run the whole suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Debian's python3 (not a pyenv build under /root): other users (www-data,
# collectd's Exec user) must be able to run the environment too.
SYSTEM_PYTHON ?= /usr/bin/python3
APT_PACKAGES := apache2 libapache2-mod-wsgi-py3 python3-venv python3-pip openssl curl \
  collectd-core influxdb victoria-metrics python3-psutil python3-lxml python3-configargparse \
  tmux prometheus prometheus-apache-exporter zabbix-agent
PYTEST_ARGS ?=

FUZZ_EXAMPLES ?= 20000

.PHONY: demo test deps venv lint unit integration fuzz bench docs clean

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages: $$missing (run as root, or install them)"; exit 1; fi; \
	  echo "installing Debian packages: $$missing"; \
	  planted=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; planted=1; fi; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES); rc=$$?; \
	  [ -n "$$planted" ] && rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi

$(VENV)/.installed: setup.cfg pyproject.toml | deps
	test -x $(PY) || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: deps $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check apache_metrics_exporter tests scripts benchmarks

test: venv lint
	$(PY) -m pytest $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

integration: venv
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

# The fuzz suite at length (CI runs it with 200 examples per property):
# mutated real pages through collect(), generated snapshots through every writer.
fuzz: venv
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/test_fuzz.py -m "not integration" $(PYTEST_ARGS)

demo: venv
	$(PY) scripts/demo.py

bench: venv
	$(PY) benchmarks/run.py

# docs/metrics.md from the metric catalogue, man pages from the parsers
# (tests/test_docs.py fails when the committed files are stale).
docs: venv
	$(PY) scripts/gen_docs.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
