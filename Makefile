# convzoo: `make run` serves the bundled models, `make test` runs the tests. Both set themselves up.
PYTHON ?= python3
VENV := .venv
SERVE_VENV := .venv-serve
PEERS_VENV := .venv-peers
CONVZOO_HOST ?= 127.0.0.1
CONVZOO_PORT ?= 8000
export CONVZOO_HOST CONVZOO_PORT

.PHONY: run test models data browser bench soak audit test-docker lint clean help

help:
	@echo "make run    serve the bundled models on $$CONVZOO_HOST:$$CONVZOO_PORT (serving deps only, no torch)"
	@echo "make test   the default test suite"
	@echo "make bench  benchmark against raw ONNX Runtime, a naive PyTorch endpoint and TorchServe, PyTriton, LitServe, BentoML (docs/bench.md)"
	@echo "make soak   SOAK_MINUTES (default 10) of mixed traffic; RSS and error counts (scripts/soak.py)"
	@echo "make audit  pip-audit of requirements/serve.lock (needs a vulnerability service)"
	@echo "make models retrain and re-export the Fashion-MNIST zoo into models/ and registry.yaml"

# Serving environment: onnxruntime, no torch; the exact versions and hashes of requirements/serve.lock.
$(SERVE_VENV)/.stamp: pyproject.toml requirements/serve.lock
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install -q --upgrade pip
	$(SERVE_VENV)/bin/pip install -q --require-hashes -r requirements/serve.lock
	$(SERVE_VENV)/bin/pip install -q --no-deps -e .
	touch $@

# Development environment: serving + export (torch) + tests.
$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[export,test]'
	touch $@

data:
	@bash scripts/ensure-data.sh

browser:
	@bash scripts/ensure-browser.sh

run: $(SERVE_VENV)/.stamp
	$(SERVE_VENV)/bin/python -m service

test: $(VENV)/.stamp data browser
	$(VENV)/bin/python -m pytest -q

models: $(VENV)/.stamp data
	$(VENV)/bin/python -m export build --zoo fashion

# Benchmark (docs/bench.md): raw ONNX Runtime, convzoo over HTTP, a naive PyTorch endpoint, a bare route.
$(VENV)/.bench-stamp: $(VENV)/.stamp pyproject.toml
	$(VENV)/bin/pip install -q -e '.[export,bench]'
	touch $@

bench: $(VENV)/.bench-stamp $(PEERS_VENV)/.stamp data
	@bash bench/ensure-wrk.sh
	$(VENV)/bin/python -m bench

# The bench's peers (bench/peers/: TorchServe, PyTriton, LitServe, BentoML) in their own virtualenv, so
# their pins never move the project's; the same onnxruntime as the development environment. A peer that
# fails to install is reported by the bench as such and the others still run. TorchServe's Python worker
# imports torch for its wire protocol (our handler does not use it): a .pth line, after the peers' own
# packages, lends it the development environment's torch instead of a second multi-GB download.
PEER_PACKAGES := "torchserve torch-model-archiver" nvidia-pytriton "litserve python-multipart" bentoml
$(PEERS_VENV)/.stamp: $(VENV)/.stamp bench/peers/__init__.py
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q --upgrade pip
	$(PEERS_VENV)/bin/pip install -q "onnxruntime==$$($(VENV)/bin/python -c 'import onnxruntime; print(onnxruntime.__version__)')" \
		numpy pillow pydantic pydantic-settings pyyaml fastapi
	for p in $(PEER_PACKAGES); do $(PEERS_VENV)/bin/pip install -q $$p || echo "bench: peer packages '$$p' did not install"; done
	$(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
		> "$$($(PEERS_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz-development-venv.pth"
	touch $@

# Soak (not in `make test`): SOAK_MINUTES of valid and 10% malformed traffic against a real server.
SOAK_MINUTES ?= 10
soak: $(VENV)/.stamp
	$(VENV)/bin/python scripts/soak.py --minutes $(SOAK_MINUTES)

# Known vulnerabilities of the locked serving dependencies; needs a vulnerability service, so not in CI.
audit: $(VENV)/.stamp
	$(VENV)/bin/pip install -q pip-audit
	$(VENV)/bin/pip-audit --require-hashes --disable-pip -r requirements/serve.lock

# Docker images and docker-compose end to end (installs and starts Docker when none runs).
test-docker:
	bash scripts/compose-smoke.sh

clean:
	rm -rf $(VENV) $(SERVE_VENV) $(PEERS_VENV) .pytest_cache
