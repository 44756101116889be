# modelport: set up, serve, test. Everything runs from the virtual environment in .venv.
#   make serve                the plate reader on :3000 (installs only what it and its model import need)
#   make serve-autocomplete   the autocompleter on :3000 (compiles llama.cpp once, on first use)
#   make test                 lint, then the whole test suite (sets up everything first if needed)
#   make lint                 ruff (lint + format check) and mypy, configured in pyproject.toml
# Each step is done once: stamps in .venv/ record what is installed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 3000
PIP := $(BIN)/python -m pip --disable-pip-version-check
export BENTOML_DO_NOT_TRACK := 1
export YOLO_OFFLINE := 1

# llama-cpp-python has no wheels on PyPI (nor does any well-kept package ship llama.cpp
# prebuilt for it), so it is compiled here, for this CPU (GGML_NATIVE): once, into a wheel
# kept in .whl/<cpu>/ that later set-ups (a new venv, `make clean`) install in seconds.
# The version is pyproject.toml's pin.
LLAMA_CPP := $(shell grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)
# Built without AMX where the CPU reports it: on a 2-core Xeon VM that lists amx_tile, ggml's AMX
# matmul died on its first tile instruction (SIGILL in tilezero: the guest is not given the tile
# state), and every llama.cpp test with it. -mno-amx-* win over -march=native in any order.
NO_AMX := $(shell grep -qw amx_tile /proc/cpuinfo 2>/dev/null && echo "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16")
LLAMA_CMAKE_ARGS := $(if $(NO_AMX),-DCMAKE_C_FLAGS="$(NO_AMX)" -DCMAKE_CXX_FLAGS="$(NO_AMX)")
CPU_ID := $(shell ((grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m); echo '$(NO_AMX)') | cksum | cut -c1-10)
WHEELS := .whl/$(CPU_ID)

.PHONY: setup setup-plate-reader setup-tf serve serve-autocomplete lint test models clean plate-ocr-tuned llama-cmake-args

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"

# The plate reader: the serving core (ONNX Runtime) plus Ultralytics, which turns the
# detector's checkpoint into ONNX when it is imported into the model store.
$(VENV)/.installed-plate-reader: pyproject.toml clients/pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e ./clients -e ".[detector-training]"
	touch $@

# The CMake flags llama.cpp is built with here (tests/benchmarks/bench_typing.py builds its
# llama-server with the same ones).
llama-cmake-args:
	@echo '$(LLAMA_CMAKE_ARGS)'

$(WHEELS)/.built:
	@echo "Compiling llama.cpp ($(LLAMA_CPP)) for this CPU: about 10-15 minutes on 2 cores, once (the wheel is kept in $(WHEELS)/)."
	@mkdir -p $(WHEELS); start=$$(date +%s); \
	CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' $(PIP) wheel --quiet --no-deps --no-cache-dir "$(LLAMA_CPP)" -w $(WHEELS) & pid=$$!; \
	i=0; while kill -0 $$pid 2>/dev/null; do sleep 5; i=$$((i + 1)); \
	  [ $$((i % 12)) = 0 ] && echo "  ... compiling llama.cpp, $$((i / 12)) min so far"; done; \
	wait $$pid && echo "llama.cpp compiled in $$(( ($$(date +%s) - start) / 60 )) min"
	touch $@

# Everything: the autocompleter, fine-tuning and the test tools.
$(VENV)/.installed: $(VENV)/.installed-plate-reader $(WHEELS)/.built
	$(PIP) install --quiet --no-deps --force-reinstall $(WHEELS)/llama_cpp_python-*.whl
	$(PIP) install --quiet --find-links $(WHEELS) -e ".[all,dev]"
	touch $@

setup-plate-reader: $(VENV)/.installed-plate-reader
	$(BIN)/modelport models import plate-detector plate-ocr plate-ocr-tail plate-text-detector

setup: $(VENV)/.installed models

models: $(VENV)/.installed
	$(BIN)/modelport models import --defaults

serve: setup-plate-reader
	$(BIN)/bentoml serve services.plate_reader.service:PlateReader --port $(PORT)

serve-autocomplete: $(VENV)/.installed
	$(BIN)/modelport models import smollm2-135m
	$(BIN)/bentoml serve services.autocomplete.service:Autocomplete --port $(PORT)

# The plate OCR fine-tuned on 15,000 synthetic plates (tests/data/plate_ocr_training_set.py:
# the ten base formats, 40% US street plates, 40% BR/HR/SK and two-row plates at night, in IR,
# blurred, tiny, oblique; seeds 1 and 11, the evaluation sets are other seeds), on the lines the
# reader cuts (--lines cut), within a 45-minute training budget (--max-minutes sizes the steps).
# The served reader reads every plate beside such a version's neck and head (tail.onnx, grafted
# on the base): the one shipped (plate-ocr-tail, services/plate_reader/models/MODEL_CARD.md) by
# default, this one with MODELPORT_PLATE_OCR_TUNED_MODEL=auto (not promoted in the base's place:
# alone it flagged far more real crops; plate README, "A plate-tuned recogniser").
# The cut alone took ~7 min per 5,000 crops on the shared 2 cores (README: what one run measured).
plate-ocr-tuned: $(VENV)/.installed
	$(BIN)/python tests/data/plate_ocr_training_set.py .bench/ocr-train
	$(BIN)/modelport finetune ocr .bench/ocr-train --epochs 3 --max-minutes 45 --validate-every 100

# TensorFlow + gpt-2-simple in a venv of their own (optional: the gpt-2-simple backend and
# the tests that make real gpt-2-simple checkpoints use it; they skip, saying so, without it).
$(VENV)-tf/.installed:
	$(PYTHON) -m venv $(VENV)-tf
	$(VENV)-tf/bin/python -m pip install --quiet "tensorflow==2.21.0" "gpt-2-simple==0.8.1"
	touch $@

setup-tf: $(VENV)-tf/.installed

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(VENV)/.installed lint
	$(if $(wildcard $(VENV)-tf/bin/python),MODELPORT_TF_PYTHON=$(abspath $(VENV)-tf/bin/python)) $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(VENV)-tf
