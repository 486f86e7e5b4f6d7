# Two commands do everything on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# uv installs in seconds what pip takes a minute or more for; pip is the fallback.
install = if [ -x $(VENV)/bin/uv ]; then $(VENV)/bin/uv pip install --quiet --python $(PY) $(1); \
	else $(PY) -m pip install --quiet $(1); fi

.PHONY: setup setup-dev system-deps run test lint pytest bench clean

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv || echo "uv not available; installing with pip"

# What `make run` needs: Responder and its dependencies.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(call install,-e .)
	touch $@

# What `make test` needs besides: the linters, pytest and the fuzzers.
$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(call install,-e '.[dev]')
	touch $@ $(VENV)/.installed

# Real Alertmanager, Prometheus, Redis and sshd for the end-to-end tests, and Chromium to look
# at the Prefect UI as a person would (Debian packages).
system-deps:
	@if ! command -v prometheus-alertmanager >/dev/null || ! command -v prometheus >/dev/null \
		|| [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null \
		|| ! command -v chromium >/dev/null || ! command -v redis-server >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			prometheus-alertmanager prometheus openssh-server openssh-client chromium \
			redis-server >/dev/null; \
	fi

run: setup
	$(VENV)/bin/responder up

lint: setup-dev
	$(VENV)/bin/ruff format --check responder flows tests bench
	$(VENV)/bin/ruff check responder flows tests bench
	$(VENV)/bin/mypy

# PostgreSQL: RESPONDER_TEST_POSTGRES_URL, or 127.0.0.1:5432 when it answers, or a throw-away
# cluster that tests/postgres.sh starts (and installs Debian's postgresql for) itself.
pytest: setup-dev system-deps
	PYTHON=$(PY) tests/postgres.sh $(VENV)/bin/pytest

test: lint pytest

# Benchmarks: figures go to docs/benchmarks.md. RESPONDER_BENCH_POSTGRES_URL adds PostgreSQL
# (for first_action.py: its Prefect server on a fresh database of that server).
bench: setup-dev
	$(PY) bench/decision_path.py --rules 10 200 1000 --alerts 20000 --repeat 3 --held 100000
	$(PY) bench/load.py storm --alerts 100000 --rules 200 --senders 16
	$(PY) bench/load.py storm --alerts 20000 --rules 10 200 1000 --senders 16
	$(PY) bench/load.py steady --rate 100 --seconds 60 --rules 200 --repeat 3
	$(PY) bench/load.py big --alerts 5000 --rules 200 --repeat 3
	$(PY) bench/dispatch.py --alerts 300 --rate 20
	$(PY) bench/first_action.py --repeat 20 --burst 50
	$(PY) bench/startup.py --rules 200 --repeat 5
	$(PY) bench/startup.py --rules 200 --repeat 5 --prefect http://127.0.0.1:9/api
	$(PY) bench/convergence.py --incidents 1000 --alerts 10000 --repeat 3
	$(PY) bench/replay.py --alerts 500 --repeat 1
	$(PY) bench/events.py --rules 50 --events 20000 --repeat 3
	$(PY) bench/load.py storm --alerts 20000 --rules 200 --senders 16 --event-rules 0 50 --repeat 3
	$(PY) bench/sources.py --events 2000 --senders 16 --sources json redis
	$(PY) bench/sources.py --events 200 --sources prefect

clean:
	rm -rf $(VENV) .responder .pytest_cache .mypy_cache .ruff_cache
