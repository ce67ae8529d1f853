# partita: the two commands a new machine needs are `make demo` and `make test`.
# Both run `make install` first; it is idempotent and quick when nothing changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.partita-installed
# System libraries and soundfonts (Debian/Ubuntu). kubectl renders the k8s overlays in tests.
APT_PACKAGES := libfluidsynth3 fluidsynth fluid-soundfont-gm timgm6mb-soundfont musescore-general-soundfont-small
ifeq ($(shell command -v kubectl 2>/dev/null),)
APT_PACKAGES += kubernetes-client
endif

.PHONY: install system-packages demo test submit bench clean-runs

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

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

# The main job on the embedded default: local Ray, SQLite MLflow under this folder,
# data synthesised on the spot. See README for the full-size runs.
demo: install
	$(PY) experiments/ablation_masks.py --preset smoke --dataset jazznet-single --seeds 0
	@echo
	@echo "MLflow database: $(CURDIR)/mlflow.db"
	@echo "Open the UI:     $(VENV)/bin/partita mlflow ui   (then http://127.0.0.1:5000)"

test: install
	$(PY) -m pytest -q

# Submit the ablation to a running Ray cluster (RAY_ADDRESS, default the local head's dashboard).
RAY_ADDRESS ?= http://127.0.0.1:8265
ARGS ?= --preset smoke --dataset jazznet-single --seeds 0
submit: install
	RAY_AUTH_MODE=token $(VENV)/bin/ray job submit --address $(RAY_ADDRESS) --working-dir . \
		--runtime-env-json '{"env_vars": {"PARTITA_HOME": "$(CURDIR)", "MLFLOW_TRACKING_URI": "$(or $(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlflow.db)"}}' \
		-- python experiments/ablation_masks.py $(ARGS)

bench: install
	$(VENV)/bin/partita bench
