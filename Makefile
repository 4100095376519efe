# The two commands a newcomer needs are `make run` and `make test`.
# Everything else here is for contributors and operators.

CARGO   ?= cargo
PROFILE ?= dev
COMPOSE ?= docker compose -f deploy/docker-compose.yml

ifeq ($(PROFILE),release)
  PROFILE_FLAG := --release
else
  PROFILE_FLAG :=
endif

.PHONY: help run test test-prereqs lint fmt build up down bench k8s-check

help:
	@echo "make run    - the whole platform in one process, embedded backends; gateway on :8080"
	@echo "make test   - every test, installing and starting what the tests need"
	@echo "make lint   - rustfmt check and clippy with warnings as errors"
	@echo "make up     - the platform with real infrastructure under docker compose"
	@echo "make down   - stop what 'make up' started"
	@echo "make bench  - the benchmarks in bench/ (figures go to BENCHMARKS.md)"

run:
	$(CARGO) run $(PROFILE_FLAG) --bin platform

# Without the end-to-end crate, whose test-util features would otherwise be
# compiled into the service binaries too.
build:
	$(CARGO) build $(PROFILE_FLAG) --workspace --exclude e2e --exclude platform-bench --bins

# Tools and local servers first (idempotent, quick when already there),
# then the common crate alone and a stub service alone (each compiles with
# only the backends it enables), then the binaries the end-to-end tests
# spawn, then every test. Building
# all targets at once gives bins and tests one feature set (dev-dependency
# features included), so nextest reuses the build instead of redoing it.
test: test-prereqs
	$(CARGO) check -p common
	$(CARGO) check -p notifications
	$(CARGO) build --workspace --all-targets
	$(CARGO) nextest run --workspace --no-fail-fast
	$(CARGO) test --workspace --doc
	python3 scripts/check-k8s.py

test-prereqs:
	bash scripts/ensure-tools.sh
	bash scripts/ensure-services.sh
	bash scripts/drop-test-databases.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

up:
	$(COMPOSE) up --build -d

down:
	$(COMPOSE) down

bench:
	bash bench/run.sh

k8s-check:
	python3 scripts/check-k8s.py
