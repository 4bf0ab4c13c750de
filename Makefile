# emr-ray-operator — developer entry points.
#   make demo    build and start the local control plane, run the operator against the EMR
#                simulator, create an example workspace, show the mirrors
#   make test    the whole test suite (what .ci/run runs)
#   make bench   benchmarks (prints figures)
SHELL := /bin/bash
KCP := tests/control-plane/kcp.sh
TOOLS := tests/tools/tools.sh
CARGO ?= cargo

.PHONY: demo test lint unit control-plane control-plane-down bench crds

control-plane:
	$(KCP) build
	$(KCP) up

control-plane-down:
	$(KCP) down

demo: control-plane
	$(CARGO) build --bin emr-ray-operator
	source .cache/kcp/env && KUBECTL=.cache/bin/kubectl ./target/debug/emr-ray-operator demo $(DEMO_ARGS)

crds:
	$(CARGO) run --quiet --bin emr-ray-operator -- crdgen --out-dir crds

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# Unit tests, then every integration test against one shared real control plane. The real
# consumers of deploy/ (promtool, kube-state-metrics, gopher-lua, kstatus) are built by
# tests/tools/tools.sh, cached in .cache/bin like the control plane.
test: lint
	$(KCP) build
	$(TOOLS) build
	$(KCP) up
	source .cache/kcp/env && EMR_TEST_KUBECONFIG="$$KUBECONFIG" \
	  $(CARGO) test --all-targets -- --test-threads=8; \
	  status=$$?; $(KCP) down; exit $$status

# Scale benchmark (100 workspaces x 100 clusters against the local control plane), then the
# single-listing benchmark of the EMR client (10,000 clusters in one workspace).
bench: control-plane
	$(CARGO) build --release --bin emr-ray-operator --bin bench --bin bench-list
	source .cache/kcp/env && ./target/release/bench $(BENCH_ARGS)
	./target/release/bench-list
