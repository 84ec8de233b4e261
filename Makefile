# shiplog — the two commands a newcomer needs are `make run` and `make test`.
# Everything they need (the DuckDB library, npm packages) is fetched by these targets.

CARGO ?= cargo
DATA_DIR ?= ./shiplog-data
LISTEN ?= 127.0.0.1:7070

.PHONY: all deps build run serve test test-rust fmt clippy check bench clean

all: build

## deps: fetch DuckDB's official prebuilt library into .duckdb/lib (no compile)
deps: .duckdb/lib/.version

.duckdb/lib/.version: scripts/fetch-duckdb.sh
	./scripts/fetch-duckdb.sh

## build: the release binary at target/release/shiplog
build: deps
	$(CARGO) build --release -p shiplog

## run: start shiplog on $(LISTEN) and print its URL
run: build
	./target/release/shiplog serve --data-dir $(DATA_DIR) --listen $(LISTEN)

## test: every test of the project
test: deps
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

fmt:
	$(CARGO) fmt --all

clippy: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## check: what CI checks besides the tests
check: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## bench: the benchmarks whose figures are in docs/benchmarks.md
bench: build
	$(CARGO) run --release -p shiplog -- bench ingest

clean:
	$(CARGO) clean
