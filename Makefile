# shiplog — the two commands a newcomer needs are `make run` and `make test`.
# Everything they need (the DuckDB library, npm packages) is fetched by these targets.

CARGO ?= cargo
DATA_DIR ?= ./shiplog-data
LISTEN ?= 127.0.0.1:7070

.PHONY: all deps build run serve test test-rust test-ingest fmt clippy check bench clean

all: build

## deps: fetch DuckDB's official prebuilt library into .duckdb/lib (no compile)
deps: .duckdb/lib/.version

.duckdb/lib/.version: scripts/fetch-duckdb.sh
	./scripts/fetch-duckdb.sh

## build: the release binary at target/release/shiplog
build: deps
	$(CARGO) build --release -p shiplog

## run: start shiplog on $(LISTEN) and print its URL; an empty data dir is first filled
## with 90 days of demo data (through the ingest path) so the dashboards have something to show
run: build
	./target/release/shiplog serve --demo --data-dir $(DATA_DIR) --listen $(LISTEN)

## test: every test of the project (Rust, end-to-end, the JavaScript collectors)
test: test-rust test-ingest

test-rust: deps
	./scripts/setup-test-system.sh
	./scripts/setup-test-python.sh
	$(CARGO) test --workspace --all-targets

## test-ingest: the JavaScript collectors (ingest/, one npm workspace installed once per
## clone): real Vite, webpack, Rspack, Rollup, esbuild and Next.js builds against
## target/debug/shiplog (built with the same features as test-rust, so after it this is a
## cache hit)
test-ingest: deps ingest/node_modules/.package-lock.json
	$(CARGO) test --workspace --all-targets --no-run
	cd ingest && npm test

# The workspace's one install (`npm ci`), redone only when package-lock.json changes: npm
# writes node_modules/.package-lock.json at the end of every install.
ingest/node_modules/.package-lock.json: ingest/package-lock.json
	cd ingest && npm ci --no-audit --no-fund --loglevel=error

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
