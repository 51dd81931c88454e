# Two commands do everything on a fresh Debian machine (as root):
#   make demo   - a throwaway Apache on a loopback port, the exporter run against it
#   make test   - install what the tests need and run the whole suite
#   make dist   - the wheel and the sdist in dist/ (metadata checked by twine)
#   make deb    - the Debian package in dist/, built from that sdist (lintian-checked)
# `make deps` (the tests need it; the demo installs only DEMO_PACKAGES, with
# `make demo-deps`) installs only the APT_PACKAGES that are missing,
# never upgrades an installed one, starts no service and leaves none enabled at
# boot that was not before: see scripts/install-deps.sh.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Debian's python3 (not a pyenv build under /root): other users (www-data,
# collectd's Exec user) must be able to run the environment too.
SYSTEM_PYTHON ?= /usr/bin/python3
APT_PACKAGES := apache2 libapache2-mod-wsgi-py3 python3-venv python3-pip openssl curl \
  collectd-core influxdb victoria-metrics python3-psutil python3-lxml python3-configargparse \
  python3-yaml python3-bcrypt tmux prometheus prometheus-apache-exporter zabbix-agent \
  zabbix-server-pgsql zabbix-frontend-php php-pgsql postgresql php-cli \
  python3-build python3-setuptools python3-wheel twine debhelper dh-python lintian \
  build-essential \
  python3-certifi python3-dateutil python3-urllib3 python3-typing-extensions
# The one name that carries a release's version: PHP's CGI binary (so that
# apt does not pull in mod_php for zabbix-frontend-php, which would reconfigure
# the system's Apache). Debian 12 has PHP 8.2, Debian 13 PHP 8.4; another
# release gets 13's name (tests/harness/zabbix.py keeps the same map).
DEBIAN_MAJOR := $(shell sed -n 's/^\([0-9][0-9]*\).*/\1/p' /etc/debian_version 2>/dev/null)
RELEASE_PACKAGES_12 := php8.2-cgi
RELEASE_PACKAGES_13 := php8.4-cgi
APT_PACKAGES += $(or $(RELEASE_PACKAGES_$(DEBIAN_MAJOR)),$(RELEASE_PACKAGES_13))
# What `make demo` needs (all of them are in APT_PACKAGES too): Apache with
# mod_wsgi, Python's venv, VictoriaMetrics for the push, openssl and curl -
# none of the test stack's servers (PostgreSQL, Zabbix, InfluxDB, ...), so a
# try on an Apache host installs no more than it uses.
DEMO_PACKAGES := apache2 libapache2-mod-wsgi-py3 python3-venv python3-pip openssl curl \
  victoria-metrics
# What `make dist` and `make deb` need (all of them are in APT_PACKAGES too).
DIST_PACKAGES := python3-build python3-setuptools python3-wheel twine
# build-essential: dpkg-checkbuilddeps requires it of every build (Debian 13's
# dpkg stops without it; a Debian 12 host usually has it already).
DEB_PACKAGES := $(DIST_PACKAGES) python3-pip debhelper dh-python lintian build-essential
PYTEST_ARGS ?=

FUZZ_EXAMPLES ?= 20000

.PHONY: demo test deps demo-deps pyenv venv lint unit integration fuzz bench docs dist deb clean

deps:
	@sh scripts/install-deps.sh $(APT_PACKAGES)

demo-deps:
	@sh scripts/install-deps.sh $(DEMO_PACKAGES)

# The Python environment alone: all that `make lint`, `make unit` and
# `make docs` need, so the development loop runs as an ordinary user.
$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

pyenv: $(VENV)/.installed

# ... plus the Debian packages the integration tests and the demo use (root).
venv: deps pyenv

lint: pyenv
	$(VENV)/bin/ruff check apache_metrics_exporter tests scripts benchmarks
	$(VENV)/bin/mypy

test: venv lint
	$(PY) -m pytest $(PYTEST_ARGS)

unit: pyenv
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

integration: venv
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

# The fuzz suite at length (CI runs it with 200 examples per property):
# mutated real pages through collect(), generated snapshots through every writer.
fuzz: pyenv
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/test_fuzz.py -m "not integration" $(PYTEST_ARGS)

demo: demo-deps pyenv
	$(PY) scripts/demo.py

bench: venv
	$(PY) benchmarks/run.py

# docs/metrics.md from the metric catalogue, man pages from the parsers
# (tests/test_docs.py fails when the committed files are stale).
docs: pyenv
	$(PY) scripts/gen_docs.py

# Built with Debian's python3-build and setuptools (--no-isolation): no
# download, the same tools on every machine of a release.
dist:
	@sh scripts/install-deps.sh $(DIST_PACKAGES)
	rm -rf dist build
	$(SYSTEM_PYTHON) -m build --no-isolation --outdir dist .
	twine check --strict dist/*

# The .deb from the sdist above: scripts/build-deb.sh, packaging/debian/.
deb:
	@sh scripts/install-deps.sh $(DEB_PACKAGES)
	$(MAKE) dist
	sh scripts/build-deb.sh dist

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache build dist
