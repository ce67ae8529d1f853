# partita: the two commands a new machine needs are `make demo` and `make test`.
# Both run `make install` first; it is idempotent and quick when nothing changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.partita-installed
# uv installs the environment from uv.lock; this exact release is bootstrapped with pip and is
# pinned in the lock too, so `uv sync` keeps it.
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
# System libraries and soundfonts (Debian/Ubuntu). kubectl renders the k8s overlays in tests;
# chromium loads the MLflow UI in the browser test.
APT_PACKAGES := libfluidsynth3 fluidsynth fluid-soundfont-gm timgm6mb-soundfont musescore-general-soundfont-small chromium
ifeq ($(shell command -v kubectl 2>/dev/null),)
APT_PACKAGES += kubernetes-client
endif

.PHONY: install system-packages lock demo test submit bench clean-runs

install: system-packages $(STAMP)

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing system packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
		echo "partita needs these system packages; run:"; \
		echo "    sudo apt-get install -y --no-install-recommends $$missing"; \
		echo "then run make again."; exit 1; \
	fi

# Installs exactly what uv.lock pins (--locked: a lock that no longer matches
# pyproject.toml is an error, fixed on purpose with `make lock`). --compile-bytecode writes the
# packages' .pyc files once, here: where PYTHONDONTWRITEBYTECODE is set (CI images, this machine)
# every Python process, each Ray worker included, would otherwise compile torch, Ray and MLflow
# from source, about 9 s of CPU per process (measured: a local Ray start 24 s -> 11 s, a small
# chord build 83 s -> 36 s). Ends with `partita doctor`, so a broken install fails here, naming
# the package, rather than at first use.
$(STAMP): pyproject.toml uv.lock Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) && $(UV) --version | grep -qx 'uv $(UV_VERSION)' || $(PY) -m pip install -q 'uv==$(UV_VERSION)'
	$(UV) sync --locked --extra test --compile-bytecode --python $(PY)
	$(VENV)/bin/partita doctor
	@touch $(STAMP)

# Re-resolve the lock from pyproject.toml's ranges, on purpose only; then rerun the fresh-clone check.
lock:
	@test -x $(UV) || { test -x $(PY) || $(PYTHON) -m venv $(VENV); $(PY) -m pip install -q 'uv==$(UV_VERSION)'; }
	$(UV) lock --upgrade

# The main job on the embedded default: local Ray, SQLite MLflow under this folder,
# data synthesised on the spot. See README for the full-size runs.
demo: install
	$(PY) experiments/ablation_masks.py --preset smoke --dataset jazznet-single --seeds 0
	@echo
	@echo "MLflow database: $(CURDIR)/mlflow.db"
	@echo "Open the UI:     $(VENV)/bin/partita mlflow ui   (then http://127.0.0.1:5000)"

test: install
	$(PY) -m pytest -q --durations=15

# Submit the ablation to a running Ray cluster (RAY_ADDRESS, default the local head's dashboard).
RAY_ADDRESS ?= http://127.0.0.1:8265
ARGS ?= --preset smoke --dataset jazznet-single --seeds 0
submit: install
	RAY_AUTH_MODE=token $(VENV)/bin/ray job submit --address $(RAY_ADDRESS) --working-dir . \
		--runtime-env-json '{"env_vars": {"PARTITA_HOME": "$(CURDIR)", "MLFLOW_TRACKING_URI": "$(or $(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlflow.db)"}}' \
		-- python experiments/ablation_masks.py $(ARGS)

bench: install
	$(VENV)/bin/partita bench
