# Sigil — make targets. `make demo` and `make test` are the quick start.
GO        ?= go
BIN       := bin
TOOLS     := .tools
PROTOS    := $(wildcard api/*/v1/*.proto)
GOFLAGS_T ?= -race -count=1
# Test artifacts (t.ArtifactDir: the dashboard e2e test's screenshots).
ARTIFACTS ?= $(CURDIR)/artifacts

.PHONY: all build test e2e-event-loop check fmt vet staticcheck proto proto-check demo bench bench-tools fuzz tools clean kube-tools image

all: build

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/...

## test: unit, fuzz seeds and e2e (real binaries as processes), with -race;
## artifacts (screenshots) land under $(ARTIFACTS)/_artifacts. The
## Kubernetes suite (e2e/kube) needs `make kube-tools`; when those cannot be
## built it is skipped, each test saying so.
test:
	mkdir -p $(ARTIFACTS)
	-$(MAKE) kube-tools
	$(GO) test $(GOFLAGS_T) -timeout 40m -artifacts -outputdir $(ARTIFACTS) $$($(GO) list ./... | grep -v /bench)
	# The bench tools' own tests (not benchmarks: those stay in make bench).
	$(GO) test $(GOFLAGS_T) -timeout 5m ./bench/floor/ ./bench/meshbench/

## e2e-event-loop: the e2e suite again with every sidecar's inbound and
## outbound on event loops (--inbound-event-loop --outbound-event-loop), the
## check before those paths become the default. Not part of test (it doubles
## the e2e time); TestInboundEventLoop, TestOutboundEventLoop and proxy/loop's
## own tests are.
e2e-event-loop:
	SIGIL_E2E_PROXY_FLAGS="--inbound-event-loop --outbound-event-loop" $(GO) test $(GOFLAGS_T) -timeout 40m ./e2e/

## image: the container image the Kubernetes manifests run (deploy/Dockerfile:
## all four binaries), tagged $(IMAGE). Not published anywhere: push it where
## your cluster pulls from and pass it to `sigil install --image`.
IMAGE ?= ghcr.io/sigil-mesh/sigil:latest
image:
	docker build -f deploy/Dockerfile -t $(IMAGE) .

## kube-tools: kube-apiserver, kubectl (v1.37.2) and etcd for e2e/kube, built
## once from the module proxy by the separate module tools/kube into
## $$SIGIL_KUBE_BIN (default ~/.cache/sigil-kube/v1.37.2), outside the repo;
## about 6 minutes the first time on 2 cores, nothing after.
kube-tools:
	tools/kube/build.sh

## check: formatting, vet, staticcheck, stale generated code, dependency
## guard, one parser per name (naming's guard), the code base's own
## conventions (internal/lint), and the builds for macOS users run the CLI on.
check: fmt vet staticcheck proto-check
	$(GO) test -count=1 -run TestBinaryDependencies ./cmd/
	$(GO) test -count=1 -run TestOneParserPerName ./naming/
	$(GO) test -count=1 ./internal/lint/
	GOOS=darwin $(GO) build ./cmd/sigil ./proxy/...
	GOOS=darwin $(GO) vet ./naming/... ./policy/...

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

## bench-tools: the load generator and a peer, built from the module proxy
## in their own module (bench/tools) so they never move Sigil's versions;
## nginx, HAProxy and strace (meshbench's syscall census) come from Debian.
bench-tools:
	cd bench/tools && $(GO) build -o ../../$(TOOLS)/fortio fortio.org/fortio && $(GO) build -o ../../$(TOOLS)/ghostunnel github.com/ghostunnel/ghostunnel
	@command -v nginx >/dev/null && command -v haproxy >/dev/null && command -v strace >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx haproxy strace >/dev/null; }

## bench: Go benchmarks, then Sigil against its peers (bench/README.md);
## about 13 minutes on the 2-core bench machine. Never part of make test.
bench: build bench-tools
	$(GO) test -run '^$$' -bench . -benchtime 3s -timeout 20m ./bench/ | tee bench/last-run.txt
	$(GO) build -o $(BIN)/floor ./bench/floor
	$(GO) run ./bench/meshbench -bin $(BIN) -tools $(TOOLS)

## fuzz: a short run of every fuzz target.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./selector/
	$(GO) test -run '^$$' -fuzz FuzzParseCSR -fuzztime 30s ./ca/
	$(GO) test -run '^$$' -fuzz FuzzValidateEntry -fuzztime 30s ./server/
	$(GO) test -run '^$$' -fuzz FuzzParseWorkload -fuzztime 30s ./naming/
	$(GO) test -run '^$$' -fuzz FuzzParseStatQuery -fuzztime 30s ./api/admin/v1/
	$(GO) test -run '^$$' -fuzz FuzzStoreAdd -fuzztime 30s ./telemetry/window/
	$(GO) test -run '^$$' -fuzz FuzzReadToken -fuzztime 30s ./agent/svid/
	$(GO) test -run '^$$' -fuzz FuzzParseBundle -fuzztime 30s ./agent/svid/
	$(GO) test -run '^$$' -fuzz FuzzParseTCPAndTLS -fuzztime 30s ./traffic/
	$(GO) test -run '^$$' -fuzz FuzzReadClientHello -fuzztime 30s ./proxy/
	$(GO) test -run '^$$' -fuzz FuzzVerifyChain -fuzztime 30s ./agent/svid/
	$(GO) test -run '^$$' -fuzz FuzzParseUpstream -fuzztime 30s ./proxy/
	$(GO) test -run '^$$' -fuzz FuzzGRPCTimeout -fuzztime 30s ./proxy/hop/
	$(GO) test -run '^$$' -fuzz FuzzServerFrames -fuzztime 30s ./proxy/h2conn/
	$(GO) test -run '^$$' -fuzz FuzzRead -fuzztime 30s ./policy/replay/
	$(GO) test -run '^$$' -fuzz FuzzPeerFromID -fuzztime 30s ./policy/
	$(GO) test -run '^$$' -fuzz FuzzCheckModule -fuzztime 30s ./policy/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 30s ./traffic/
	$(GO) test -run '^$$' -fuzz FuzzPolicyBundle -fuzztime 30s ./traffic/
	$(GO) test -run '^$$' -fuzz FuzzParseMask -fuzztime 30s ./policy/
	$(GO) test -run '^$$' -fuzz FuzzSpoolIngest -fuzztime 30s ./auditstream/spool/
	$(GO) test -run '^$$' -fuzz FuzzAppendRecord -fuzztime 30s ./auditstream/
	$(GO) test -run '^$$' -fuzz FuzzParseSealed -fuzztime 30s ./auditstream/
	$(GO) test -run '^$$' -fuzz FuzzRecordWriter -fuzztime 30s ./agent/relay/
	$(GO) test -run '^$$' -fuzz FuzzAppendString -fuzztime 30s ./internal/jsonenc/
	$(GO) test -run '^$$' -fuzz FuzzIsCompact -fuzztime 30s ./internal/jsonenc/
	$(GO) test -run '^$$' -fuzz FuzzAuthority -fuzztime 30s ./naming/
	$(GO) test -run '^$$' -fuzz FuzzParseEndpoint -fuzztime 30s ./naming/
	$(GO) test -run '^$$' -fuzz FuzzParseServiceAccount -fuzztime 30s ./k8s/psat/
	$(GO) test -run '^$$' -fuzz FuzzAttestReviewAnswer -fuzztime 30s ./k8s/psat/
	$(GO) test -run '^$$' -fuzz FuzzServiceName -fuzztime 30s ./naming/
	$(GO) test -run '^$$' -fuzz FuzzNodeName -fuzztime 30s ./naming/
	$(GO) test -run '^$$' -fuzz FuzzHostPattern -fuzztime 30s ./naming/
	$(GO) test -run '^$$' -fuzz FuzzResourceHost -fuzztime 30s ./naming/
	$(GO) test -run '^$$' -fuzz FuzzRouteSemantics -fuzztime 30s ./traffic/
	$(GO) test -run '^$$' -fuzz FuzzUnmarshal -fuzztime 30s ./strictjson/
	$(GO) test -run '^$$' -fuzz FuzzGatewaysAndPorts -fuzztime 30s ./traffic/
	$(GO) test -run '^$$' -fuzz FuzzPort -fuzztime 30s ./naming/
	$(GO) test -run '^$$' -fuzz FuzzCheckRegister -fuzztime 30s ./agent/relay/
	$(GO) test -run '^$$' -fuzz '^FuzzParseHead$$' -fuzztime 30s ./proxy/h1/
	$(GO) test -run '^$$' -fuzz FuzzParseResponseHead -fuzztime 30s ./proxy/h1/
	$(GO) test -run '^$$' -fuzz FuzzMergerAdd -fuzztime 30s ./telemetry/
	$(GO) test -run '^$$' -fuzz FuzzRenderParams -fuzztime 30s ./deploy/
	$(GO) test -run '^$$' -fuzz FuzzWriter -fuzztime 30s ./cmd/internal/termsafe/
	$(GO) test -run '^$$' -fuzz FuzzReceiver -fuzztime 30s ./api/configdelta/
	$(GO) test -run '^$$' -fuzz FuzzServe -fuzztime 30s ./proxy/h1/
	$(GO) test -run '^$$' -fuzz FuzzCheck -fuzztime 30s ./audit/
	$(GO) test -run '^$$' -fuzz FuzzParseRequest -fuzztime 30s ./proxy/h1/
	$(GO) test -run '^$$' -fuzz FuzzParseResponse -fuzztime 30s ./proxy/h1/
	$(GO) test -run '^$$' -fuzz FuzzB3Extract -fuzztime 30s ./proxy/
	$(GO) test -run '^$$' -fuzz FuzzParseExpr -fuzztime 30s ./deploy/grafana/
	$(GO) test -run '^$$' -fuzz FuzzParseCgroups -fuzztime 30s ./agent/k8sattest/
	$(GO) test -run '^$$' -fuzz FuzzDecodeReview -fuzztime 30s ./k8s/inject/
	$(GO) test -run '^$$' -fuzz FuzzParseServers -fuzztime 30s ./agent/

	$(GO) test -run '^$$' -fuzz FuzzClean -fuzztime 30s ./tap/
	$(GO) test -run '^$$' -fuzz FuzzTranslate -fuzztime 30s ./gatewayapi/
	$(GO) test -run '^$$' -fuzz FuzzTapQuery -fuzztime 30s ./server/
	$(GO) test -run '^$$' -fuzz FuzzRolloutTarget -fuzztime 30s ./rollout/
	$(GO) test -run '^$$' -fuzz FuzzWriteRequest -fuzztime 30s ./proxy/h1/
	$(GO) test -run '^$$' -fuzz FuzzNormalize -fuzztime 30s ./pathnorm/
	$(GO) test -run '^$$' -fuzz 'FuzzReadStrict$$' -fuzztime 30s ./proxy/h1/
	$(GO) test -run '^$$' -fuzz FuzzDashboardQuery -fuzztime 30s ./dashboard/
	$(GO) test -run '^$$' -fuzz FuzzReadStrictResponse -fuzztime 30s ./proxy/h1/
	$(GO) test -run '^$$' -fuzz FuzzSyslogFormat -fuzztime 30s ./auditstream/sink/
	$(GO) test -run '^$$' -fuzz FuzzReadRecords -fuzztime 30s ./auditstream/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 30s ./k8s/evictions/

clean:
	rm -rf $(BIN) $(TOOLS)
