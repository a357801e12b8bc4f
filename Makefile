# Sigil — make targets. `make demo` and `make test` are the quick start.
GO        ?= go
BIN       := bin
TOOLS     := .tools
PROTOS    := $(wildcard api/*/v1/*.proto)
GOFLAGS_T ?= -race -count=1

.PHONY: all build test check fmt vet staticcheck proto proto-check demo bench fuzz tools clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

## test: unit, fuzz seeds and e2e (real binaries as processes), with -race.
test:
	$(GO) test $(GOFLAGS_T) -timeout 15m $$($(GO) list ./... | grep -v /bench)

## check: formatting, vet, staticcheck, stale generated code, dependency guard.
check: fmt vet staticcheck proto-check
	$(GO) test -count=1 -run TestBinaryDependencies ./cmd/

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) tool staticcheck ./...

$(TOOLS)/protoc-gen-go: go.mod
	$(GO) build -o $@ google.golang.org/protobuf/cmd/protoc-gen-go
$(TOOLS)/protoc-gen-go-grpc: go.mod
	$(GO) build -o $@ google.golang.org/grpc/cmd/protoc-gen-go-grpc

## tools: protoc from Debian, the Go plugins from the module proxy.
tools: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	@command -v protoc >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null; }

PROTOC = protoc --plugin=protoc-gen-go=$(TOOLS)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(TOOLS)/protoc-gen-go-grpc

proto: tools
	$(PROTOC) --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative $(PROTOS)

## proto-check: fails when the committed generated code differs from the .proto files.
proto-check: tools
	@tmp=$$(mktemp -d); \
	$(PROTOC) --go_out=$$tmp --go_opt=paths=source_relative --go-grpc_out=$$tmp --go-grpc_opt=paths=source_relative $(PROTOS) && \
	for f in $$(cd $$tmp && find . -name '*.go'); do \
		cmp -s $$tmp/$$f $$f || { echo "generated code is stale: $$f (run make proto)"; rm -rf $$tmp; exit 1; }; \
	done; rm -rf $$tmp; echo "generated code is up to date"

## demo: a server, an agent and a workload fetching its SVID.
demo: build
	$(GO) build -o $(BIN)/ ./demo/sigil-demo-app
	./demo/run.sh

## bench: benchmarks (never part of make test); see bench/README.md.
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 3s -timeout 20m ./bench/ | tee bench/last-run.txt

## fuzz: a short run of every fuzz target.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./selector/
	$(GO) test -run '^$$' -fuzz FuzzParseCSR -fuzztime 30s ./ca/
	$(GO) test -run '^$$' -fuzz FuzzValidateEntry -fuzztime 30s ./server/
	$(GO) test -run '^$$' -fuzz FuzzParseUpstream -fuzztime 30s ./proxy/
	$(GO) test -run '^$$' -fuzz FuzzPeerFromID -fuzztime 30s ./policy/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./traffic/

clean:
	rm -rf $(BIN) $(TOOLS)
