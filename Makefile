# emr-ray-operator — developer entry points.
#   make demo    build and start the local control plane, run the operator against the EMR
#                simulator, create an example workspace, show the mirrors
#   make test    the whole test suite (what .ci/run runs)
#   make bench   benchmarks (prints figures)
#   make fuzz    a short cargo-fuzz run of every parser of outside input (not part of `test`)
#   make image   the operator's image as an OCI archive (no container engine), size and digest
SHELL := /bin/bash
KCP := tests/control-plane/kcp.sh
TOOLS := tests/tools/tools.sh
CARGO ?= cargo

.PHONY: demo test lint unit control-plane control-plane-down bench crds fuzz image

control-plane:
	$(KCP) build
	$(KCP) up

control-plane-down:
	$(KCP) down

# `make demo DEMO_ARGS=--in-cluster`: the same demo with the chart's pod on a real node (the
# image built by `make image`, a control plane with a kubelet and containerd: kcp.sh up --node).
ifneq (,$(findstring --in-cluster,$(DEMO_ARGS)))
demo: image
	$(KCP) build
	$(KCP) up --node
	$(KCP) node-import target/image/emr-ray-operator.oci.tar
	$(CARGO) build -p emr-sim --bin emr-demo
	source .cache/kcp-node/env && KUBECTL=.cache/bin/kubectl HELM=.cache/bin/helm \
	  ./target/debug/emr-demo $(DEMO_ARGS)
else
demo: control-plane
	$(CARGO) build -p emr-sim --bin emr-demo
	source .cache/kcp/env && KUBECTL=.cache/bin/kubectl ./target/debug/emr-demo $(DEMO_ARGS)
endif

crds:
	$(CARGO) run --quiet --bin emr-ray-operator -- crdgen --out-dir crds

# The operator's image, target/image/emr-ray-operator.oci.tar (see README, "The image").
image:
	image/build.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Unit tests, then every integration test against one shared real control plane, then the chart
# end to end on a real node (a second control plane with a kubelet, containerd and the image
# `make image` built: tests/in_cluster/). The real consumers of deploy/ (promtool,
# kube-state-metrics, gopher-lua, kstatus, actionlint) are built by tests/tools/tools.sh, cached
# in .cache/bin like the control plane. The official Python SDK, the simulator's conformance
# client (tests/integration/sdk_conformance.rs), is installed into .cache/sdk/ by
# tests/sdk_conformance/sdk.sh. The fuzz targets are built by lint, never run here (`--all-targets`
# would run each as a test: libFuzzer without a time limit; `make fuzz` runs them).
test: lint
	$(KCP) build
	$(TOOLS) build
	tests/sdk_conformance/sdk.sh setup
	image/build.sh
	$(KCP) up
	source .cache/kcp/env && EMR_TEST_KUBECONFIG="$$KUBECONFIG" \
	  $(CARGO) test --workspace --exclude emr-ray-operator-fuzz --all-targets -- --test-threads=8; \
	  status=$$?; $(KCP) down; exit $$status
	$(KCP) up --node
	source .cache/kcp-node/env && EMR_TEST_KUBECONFIG="$$KUBECONFIG" \
	  $(CARGO) test --test in_cluster -- --ignored --nocapture; \
	  status=$$?; $(KCP) down --node || status=1; exit $$status

# Scale benchmark (100 workspaces x 100 clusters against the local control plane: idle RSS,
# scale points at 1,000 and 5,000 mirrors and the slope of peak RSS, the main run, the raw
# writer, two shards; every figure beside its goal), then the single-listing benchmark of the
# EMR client (10,000 clusters in one workspace). About 10-15 minutes on 2 cores; skip phases
# with e.g. BENCH_ARGS="--scales '' --shards 0 --raw-writer false --idle-rss false
# --naive-intervals 0".
bench: control-plane
	$(CARGO) build --release -p emr-ray-operator -p emr-bench
	source .cache/kcp/env && ./target/release/bench $(BENCH_ARGS)
	./target/release/bench-list

# Short fuzz run of every target in fuzz/ (nightly + cargo-fuzz, installed when missing), each
# for FUZZ_SECONDS, on a scratch copy of the checked-in seeds (fuzz/corpus/<target>/) so the
# seeds stay small. Crashes land in fuzz/artifacts/<target>/. Not part of `make test`.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS ?= listing_body cluster_detail job_listing queue_listing error_body remote_text retry_after endpoint duration quantities sign_input sts_response
FUZZ_CARGO ?= cargo +nightly
FUZZ_FLAGS := -s none --codegen-units 16
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	set -e; for t in $(FUZZ_TARGETS); do \
	  rm -rf fuzz/target/corpus/$$t && mkdir -p fuzz/target/corpus/$$t; \
	  cp fuzz/corpus/$$t/* fuzz/target/corpus/$$t/; \
	  (cd fuzz && CARGO_INCREMENTAL=0 $(FUZZ_CARGO) fuzz run $(FUZZ_FLAGS) $$t target/corpus/$$t \
	    -- -max_total_time=$(FUZZ_SECONDS)); \
	done
