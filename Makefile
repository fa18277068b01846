# The one task runner: README and CI call these targets.
SHELL := /bin/bash
UV ?= uv
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: up down ps infra sync test lint typecheck unit component integration deploy-check bench schema test-real-model chaos test-cluster \
	images compose-smoke

up:            ## install what is missing, start infrastructure and every service, wait for /healthz
	@bash scripts/stack.sh up

down:          ## stop exactly what `make up` started
	@bash scripts/stack.sh down

ps:            ## each process and its health
	@bash scripts/stack.sh ps

infra:         ## NATS JetStream + Redis + TimescaleDB only, .env written
	@bash scripts/stack.sh infra

lint:
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck:      ## mypy --strict over every package: the workspace, then the load harness
	$(UV) run --frozen mypy
	cd tests/load && $(UV) run --frozen mypy

deploy-check:  ## offline checks of Dockerfiles, compose, Helm chart, rendered manifests, Tiltfile
	@bash scripts/deploy_check.sh

images:        ## every service image from deploy/Dockerfile, on the project's own Docker daemon; prints sizes
	@bash scripts/images.sh

compose-smoke: infra  ## the images under Docker Compose: healthy, a task and its events, SIGKILL + restart, teardown
	@bash scripts/compose_smoke.sh

test: infra lint typecheck deploy-check compose-smoke  ## everything CI runs
	$(UV) run --frozen --project tests/load pytest -q tests/load/tests
	$(UV) run --frozen pytest
	$(UV) run --frozen pytest -m chaos tests/chaos -p no:cacheprovider

unit:          ## unit tests of the protocol and the services (some against a nats-server of their own and Redis)
	$(UV) run --frozen pytest libs services

component:     ## services in process on one nats-server (an account per test), Redis, TimescaleDB
	$(UV) run --frozen pytest tests/component

integration:   ## services as processes: kill, crash, drain, multi-replica, tracing and metrics
	$(UV) run --frozen pytest tests/integration

chaos:         ## fault injection: 7 faults x 80 tasks on a stack of its own; prints the figures per fault
	$(UV) run --frozen pytest -m chaos tests/chaos -p no:cacheprovider

test-cluster:  ## opt-in: a 3-node NATS cluster loses the node leading LOOM_TASKS and a dispatcher mid-run
	$(UV) run --frozen pytest -m cluster tests/chaos -p no:cacheprovider

test-real-model: ## opt-in: a calculator task on a real small model (SmolLM2-135M on llama-cpp-python); the first run builds .realmodel-venv (~4 min)
	@bash scripts/realmodel_env.sh
	$(UV) run --frozen pytest -m realmodel tests/realmodel --durations=5

bench:         ## load test against the running stack (make up first); BENCH_ARGS="--profile long"
	$(UV) run --frozen --project tests/load python -m loom_load $(BENCH_ARGS)

schema:        ## JSON Schema of the wire models
	@$(UV) run --frozen python -m loom_protocol.schema
