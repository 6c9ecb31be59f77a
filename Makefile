# `make run`: set up and start the server on the embedded registry. `make test`: set up, lint, type-check
# and run the tests.
# `make bench`: the benchmark against the peers (bench/run.py); `make bench-size`: its registry size figures
# alone (bench/registry_size.py); `make bench-flips`: its health check flips alone (bench/health_flips.py);
# `make bench-cost`: CPU per query at fixed rates and a flooding source (bench/cost.py); `make bench-churn`:
# speed while the registry changes (bench/churn.py); `make bench-tap`: a half load's latency split between
# the server and dnsperf, from a loopback capture (bench/tap.py);
# `make soak`: the soak (bench/soak.py).
# `make etcd`: a local etcd to try the etcd backend on (127.0.0.1:2379, data in .etcd/); Ctrl-C stops it.
# The venv's interpreter: PYTHON=... if given; else the distribution's python3 where it is 3.11 or newer
# and can make a venv (on Debian with python3-venv, which making the venv installs), else the first
# python3 on PATH. Debian's is built with PGO and LTO and linked statically; here it answered a query
# for 8% less CPU and loaded a million machines 10–20% sooner than a from-source build without them
# (docs/deployment.md, The interpreter). A venv made before keeps its interpreter until removed.
PYTHON ?=
DISTRO_PYTHON := /usr/bin/python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config.example.yaml
DEBIAN_PACKAGES := bind9-dnsutils dnsmasq-base dnsperf tcpdump etcd-server etcd-client sqlite3 iproute2 gcc libc6-dev musl-tools systemd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv run check lint test bench bench-size bench-flips bench-cost bench-churn bench-tap soak etcd system-deps clean

$(BIN)/internal-dns: setup.cfg pyproject.toml
	$(if $(PYTHON),,$(if $(shell command -v dpkg),$(call apt_install,python3-venv)))
	$(or $(PYTHON),$$($(DISTRO_PYTHON) -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 \
	  && echo $(DISTRO_PYTHON) || echo python3)) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

venv: $(BIN)/internal-dns

run: venv
	$(BIN)/internal-dns serve -c $(CONFIG)

check: venv
	$(BIN)/internal-dns check -c $(CONFIG)

# The Debian packages of $(1) that are not installed yet, installed.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

# The Debian tools the tests start for real: dig, dnsmasq, dnsperf, tcpdump, etcd, the sqlite3 shell; ip (network
# namespaces), gcc and musl-gcc (glibc's and musl's resolvers as clients), systemd-analyze (the unit).
system-deps:
	$(call apt_install,$(DEBIAN_PACKAGES))

# ruff (lint and format) and mypy, configured in pyproject.toml; `make test` runs them first.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: system-deps venv lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# internal-dns against plain Twisted Names and dnsmasq under dnsperf; BENCH_ARGS="--help" for the flags.
bench: system-deps venv
	$(BIN)/pip install -q -e '.[bench]' --config-settings editable_mode=compat
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# internal-dns loading one registry from each backend (files, SQLite, etcd), cold and restarted, against
# dnsmasq on a hosts file of the same addresses and CoreDNS's published sizing; 100,000 machines unless
# BENCH_ARGS="--registry-machines 1000000" (a files-backend load of that size takes minutes).
bench-size: system-deps venv
	$(BIN)/python -m bench.registry_size $(BENCH_ARGS)

# Health checks flipping 1,000 times a second for 10 s through SQLite and etcd on 100,000 machines, each
# sampled flip timed until served, beside the backend's propagation of a machine added and a probe asking
# every 2 ms; writes bench/results/health-flips.json. BENCH_ARGS="--machines 5000 --rate 200 --seconds 3"
# and the like change the run (`make bench` runs it at 20,000 machines for 5 s: --flip-machines).
bench-flips: system-deps venv
	$(BIN)/python -m bench.health_flips $(BENCH_ARGS)

# CPU per answered query at 1,000 and 10,000 qps (internal-dns, Twisted Names, dnsmasq) and one source
# flooding beside another at 1,000 qps (bench/cost.py); writes bench/results/cost.json.
bench-cost: system-deps venv
	$(BIN)/python -m bench.cost $(BENCH_ARGS)

# Throughput and half-load latency while 10 machines a second of the asked network change, through
# SQLite and etcd (bench/churn.py); writes bench/results/churn.json.
bench-churn: system-deps venv
	$(BIN)/python -m bench.churn $(BENCH_ARGS)

# Workload (a) at 60,000 qps on internal-dns and dnsmasq, alternately, timed by dnsperf and by a capture on
# the loopback device (bench/tap.py; needs root); writes bench/results/tap.json.
bench-tap: system-deps venv
	$(BIN)/python -m bench.tap $(BENCH_ARGS)

# A busy host's mixed load held for 10 minutes on internal-dns and dnsmasq (bench/soak.py);
# BENCH_ARGS="--minutes 2 --keep-awake" and the like change the run.
soak: system-deps venv
	$(BIN)/python -m bench.soak $(BENCH_ARGS)

# One etcd member in the foreground, its data kept in .etcd/ across runs (`rm -rf .etcd` forgets it),
# for a config with `registry: {backend: etcd}` (docs/registry.md, "etcd"). Ctrl-C stops it.
etcd: system-deps
	@echo "etcd on http://127.0.0.1:2379, data in .etcd/; Ctrl-C stops it"
	etcd --name internal-dns --data-dir .etcd \
	  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
	  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
	  --initial-cluster internal-dns=http://127.0.0.1:2380 --quota-backend-bytes 8589934592

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
