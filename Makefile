# convzoo: `make run` serves the bundled models, `make test` runs the tests. Both set themselves up.
PYTHON ?= python3
VENV := .venv
SERVE_VENV := .venv-serve
PEERS_VENV := .venv-peers
CONVZOO_HOST ?= 127.0.0.1
CONVZOO_PORT ?= 8000
export CONVZOO_HOST CONVZOO_PORT

.PHONY: run test test-long models data browser bench bench-rollout soak audit test-docker lint clean help

help:
	@echo "make run    serve the bundled models on $$CONVZOO_HOST:$$CONVZOO_PORT (serving deps only, no torch)"
	@echo "make test   the default test suite (under 15 min)"
	@echo "make test-long  the slow tests: export against PyTorch, the fuzzers, overload (CI runs them too)"
	@echo "make lint   ruff check, ruff format --check and mypy --strict on service, export, bench, tests, convzoo, scripts; lint-imports (the rooms' rules)"
	@echo "make bench  benchmark against raw ONNX Runtime, a naive PyTorch endpoint and TorchServe, PyTriton, LitServe, BentoML, and 12 MP phone photos (docs/bench.md)"
	@echo "make bench-cli  a folder of 2,000 photos through convzoo classify vs the server's own throughput (docs/bench-cli.md)"
	@echo "make bench-rollout  versions swapped, canaried and shadowed under load (docs/bench-rollout.md)"
	@echo "make bench-models  many random-weight ImageNet models under one memory budget (docs/bench-models.md)"
	@echo "make bench-auth  the cost of API keys and quotas, and a flooding key beside a compliant one (docs/auth.md)"
	@echo "make bench-monitor  what the monitor catches (drift, unusual inputs) and costs (docs/bench-monitor.md)"
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

# promtool (Debian's prometheus package) checks deploy/prometheus in `make test`.
.PHONY: promtool
promtool:
	@bash scripts/ensure-promtool.sh

run: $(SERVE_VENV)/.stamp
	$(SERVE_VENV)/bin/python -m service

test: $(VENV)/.stamp data browser promtool
	$(VENV)/bin/python -m pytest -q

# The slow tests (marker `slow`, out of `make test`): export against PyTorch and torchvision, the fuzzers,
# twice the capacity's load. CI runs them after `make test`.
test-long: $(VENV)/.stamp data browser promtool
	$(VENV)/bin/python -m pytest -q -m slow

models: $(VENV)/.stamp data
	$(VENV)/bin/python -m export build --zoo fashion

# Benchmark (docs/bench.md): raw ONNX Runtime, convzoo over HTTP, a naive PyTorch endpoint, a bare route.
$(VENV)/.bench-stamp: $(VENV)/.stamp pyproject.toml
	$(VENV)/bin/pip install -q -e '.[export,bench]'
	touch $@

bench: $(VENV)/.bench-stamp $(PEERS_VENV)/.stamp data
	@bash bench/ensure-wrk.sh
	$(VENV)/bin/python -m bench
	$(VENV)/bin/python -m bench.auth

# API keys and quotas (docs/auth.md): their cost at fmnist-lenet5 c32, and a key flooding beside a compliant one.
.PHONY: bench-auth
bench-auth: $(VENV)/.stamp
	$(VENV)/bin/python -m bench.auth

# The bench's peers (bench/peers/: TorchServe, PyTriton, LitServe, BentoML) in their own virtualenv, so
# their pins never move the project's; the same onnxruntime as the development environment. A peer that
# fails to install is reported by the bench as such and the others still run. TorchServe's Python worker
# imports torch for its wire protocol (our handler does not use it): a .pth line, after the peers' own
# packages, lends it the development environment's torch instead of a second multi-GB download (and
# torchvision, which the phone photos' "PIL + torchvision" rows and TorchServe's stock image_classifier
# handler use; that handler's module also imports captum).
PEER_PACKAGES := "torchserve torch-model-archiver captum" nvidia-pytriton "litserve python-multipart" bentoml
$(PEERS_VENV)/.stamp: $(VENV)/.stamp bench/peers/__init__.py
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q --upgrade pip
	$(PEERS_VENV)/bin/pip install -q "onnxruntime==$$($(VENV)/bin/python -c 'import onnxruntime; print(onnxruntime.__version__)')" \
		numpy pillow pydantic pydantic-settings pyyaml fastapi
	for p in $(PEER_PACKAGES); do $(PEERS_VENV)/bin/pip install -q $$p || echo "bench: peer packages '$$p' did not install"; done
	$(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
		> "$$($(PEERS_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz-development-venv.pth"
	touch $@


# Lint: ruff (rules and format) and mypy --strict over the code and the tests; the checkers are pinned (lint extra).
LINT_PATHS := service export bench tests convzoo scripts
$(VENV)/.lint-stamp: $(VENV)/.stamp pyproject.toml
	$(VENV)/bin/pip install -q -e '.[export,test,lint]'
	touch $@

lint: $(VENV)/.lint-stamp
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy --strict $(LINT_PATHS)
	$(VENV)/bin/lint-imports

# The client CLI against the server's own throughput at the same concurrency (docs/bench-cli.md).
# BENCH_CLI_ARGS: e.g. --count 500 --rounds 1.
BENCH_CLI_ARGS ?=
.PHONY: bench-cli
bench-cli: $(VENV)/.stamp
	$(VENV)/bin/python -m bench.cli $(BENCH_CLI_ARGS)

# Many models, one memory budget (docs/bench-models.md): random-weight ImageNet models exported into
# build/bench-models (not committed), uniform and skewed random workloads. BENCH_MODELS_ARGS: e.g.
# --label after --seconds 45 --budget-mb 300.
BENCH_MODELS_ARGS ?= --label current
.PHONY: bench-models
# Versions rolled out under load: swaps, a broken version, a canary, a shadow (docs/bench-rollout.md).
bench-rollout: $(VENV)/.stamp
	$(VENV)/bin/python -m bench.rollout $(BENCH_ROLLOUT_ARGS)

bench-models: $(VENV)/.stamp
	$(VENV)/bin/python scripts/bench_models.py $(BENCH_MODELS_ARGS)

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

# Mutation fuzzer of the image path (tests/security/fuzz.py): FUZZ_SECONDS with FUZZ_SEED; `make test` runs
# it for 10 s with seed 0. A failing case is saved under tests/security/fuzz_cases/ and replayed by the tests.
.PHONY: fuzz
FUZZ_SECONDS ?= 300
FUZZ_SEED ?= 1
fuzz: $(VENV)/.stamp
	$(VENV)/bin/python -m tests.security.fuzz --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED)

# perf_analyzer (Triton's load generator, PyPI perf-analyzer) against /v2 over HTTP and gRPC, and the cost
# of tracing (docs/bench.md, section perf_analyzer). PERF_ARGS, e.g. --models fmnist-lenet5,resnet50.
.PHONY: bench-perf-analyzer
PERF_ARGS ?=
bench-perf-analyzer: $(VENV)/.stamp
	$(VENV)/bin/python scripts/perf_analyzer.py $(PERF_ARGS)

# What the monitor catches and costs (docs/bench-monitor.md): shifts detected, false alarms, photos flagged
# unusual by a Fashion-MNIST model, throughput with the monitor on and off (interleaved). A few minutes.
.PHONY: bench-monitor
bench-monitor: $(VENV)/.stamp data
	@bash bench/ensure-wrk.sh
	$(VENV)/bin/python -m bench.monitor
