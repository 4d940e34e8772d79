# Every target installs what it needs: a Python venv with the pinned tools, a Docker
# engine when none answers, and the systemd test images of Debian 13 and 12 (built locally,
# no registry).
VENV ?= .venv
# The controller's Python: Debian's own /usr/bin/python3 when it can make a venv. Ansible's
# controller is the largest CPU consumer of make test, and Debian builds its interpreter with
# profile-guided and link-time optimisation and links libpython into it, where pyenv's default
# build (a shared libpython, no --enable-optimizations) has neither: the same playbook took 0.82
# of the controller CPU (benchmarks/controller_python.py, 2026-12-03). Any python3 otherwise.
PYTHON ?= $(shell /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 && echo /usr/bin/python3 || echo python3)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
SANDBOX := -i inventories/sandbox

.PHONY: help setup venv sanity-venvs galaxy-importer docker image ssh-client lint unit test test-all demo demo-down bench clean

help:
	@echo "make demo       deploy nginx_gunicorn to a local container and print its URL"
	@echo "make demo-down  remove the demo containers"
	@echo "make test       lint, unit tests, the SSH deploy test and every Molecule scenario on Debian 13;"
	@echo "                nginx_gunicorn and apache_modwsgi on 12 too"
	@echo "make test-all   the same with every scenario and the SSH deploy test on Debian 12 and 13"
	@echo "make bench      converge/redeploy timings and wrk req/s (benchmarks/)"

$(VENV)/.installed: requirements-dev.txt sample_app/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt -e 'sample_app[test]'
	touch $@

venv: $(VENV)/.installed

docker:
	bash scripts/install-docker-engine.sh

image: docker
	bash scripts/build-test-image.sh

# The real-servers test reaches its hosts with the SSH client (ssh, ssh-keygen, ssh-keyscan).
ssh-client:
	command -v ssh-keyscan >/dev/null 2>&1 || { apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-client >/dev/null; }

# ansible-test's sanity virtualenvs, filled from the package index now so that make test downloads
# nothing (scripts/built_collection.py says why it needs a stand-in for pip's bootstrap script).
sanity-venvs: venv
	python scripts/built_collection.py

# Galaxy's importer on the built tarball, as Galaxy (its default settings) and Automation Hub
# (scripts/galaxy-importer-automation-hub.cfg) run it on an upload; its warnings are worth reading.
# Not in make test: it needs a venv of its own (it pins older libraries than the test tools), and
# its checks are ansible-lint's and ansible-doc's, which make test runs already.
IMPORTER_VENV ?= build/importer-venv
galaxy-importer: venv
	test -x $(IMPORTER_VENV)/bin/python || $(PYTHON) -m venv $(IMPORTER_VENV)
	$(IMPORTER_VENV)/bin/pip install --quiet galaxy-importer==0.4.44
	rm -rf build/importer && ansible-galaxy collection build --output-path build/importer .
	cd build/importer && PATH=$(CURDIR)/$(IMPORTER_VENV)/bin:$$PATH python -m galaxy_importer.main *.tar.gz
	cd build/importer && GALAXY_IMPORTER_CONFIG=$(CURDIR)/scripts/galaxy-importer-automation-hub.cfg \
		PATH=$(CURDIR)/$(IMPORTER_VENV)/bin:$$PATH python -m galaxy_importer.main *.tar.gz

# The virtualenvs (1.5 min from nothing, mostly downloads) are made while the images build.
setup: venv ssh-client
	$(MAKE) --no-print-directory -j2 sanity-venvs image

lint: venv
	yamllint -s .
	ansible-lint

unit: venv
	pytest -q sample_app/tests tests/test_roles.py tests/test_playbooks.py

# Three groups at once on pytest-xdist workers, on two cores: the scenarios wait on their hosts,
# HAProxy's checks and the network between their CPU-bound steps, which a third worker fills (two
# kept the cores 87% busy, three 96-99% while three ran). README's Development section has
# the timings.
# PYTEST_WORKERS=0 runs one at a time. Each Molecule scenario and the real-servers test is an
# xdist group that one worker runs whole; tests/conftest.py deals the groups out to the workers.
PYTEST_WORKERS ?= 3
PYTEST_XDIST := -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder
TESTS := tests sample_app/tests

test: setup
	pytest $(PYTEST_XDIST) -v -rA $(TESTS)

test-all: setup
	FLASKSTACK_TEST_MATRIX=full pytest $(PYTEST_XDIST) -v -rA $(TESTS)

demo: setup
	ansible-playbook $(SANDBOX) playbooks/sandbox_up.yml
	ansible-playbook $(SANDBOX) site.yml
	ansible-playbook $(SANDBOX) playbooks/sandbox_report.yml

demo-down: venv docker
	ansible-playbook $(SANDBOX) playbooks/sandbox_down.yml

bench: setup
	python benchmarks/topologies.py

clean: demo-down
	rm -rf $(VENV) .ansible .pytest_cache
