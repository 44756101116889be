# modelport: set up, serve, test. Everything runs from the virtual environment in .venv.
#   make serve   set up (venv, dependencies, default models) and start the plate reader
#   make test    run the test suite (sets up the venv first if needed)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 3000
export BENTOML_DO_NOT_TRACK := 1
export YOLO_OFFLINE := 1

.PHONY: setup setup-tf serve serve-autocomplete test models clean

$(BIN)/.installed: pyproject.toml clients/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e ./clients -e ".[all,dev]"
	touch $@

setup: $(BIN)/.installed models

models: $(BIN)/.installed
	$(BIN)/modelport models import --defaults

serve: setup
	$(BIN)/bentoml serve services.plate_reader:PlateReader --port $(PORT)

serve-autocomplete: setup
	$(BIN)/bentoml serve services.autocomplete:Autocomplete --port $(PORT)

# TensorFlow + gpt-2-simple in a venv of their own (optional: the gpt-2-simple backend and
# the tests that make real gpt-2-simple checkpoints use it; they skip, saying so, without it).
$(VENV)-tf/.installed:
	$(PYTHON) -m venv $(VENV)-tf
	$(VENV)-tf/bin/python -m pip install --quiet "tensorflow==2.21.0" "gpt-2-simple==0.8.1"
	touch $@

setup-tf: $(VENV)-tf/.installed

test: $(BIN)/.installed
	$(if $(wildcard $(VENV)-tf/bin/python),MODELPORT_TF_PYTHON=$(abspath $(VENV)-tf/bin/python)) $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(VENV)-tf
