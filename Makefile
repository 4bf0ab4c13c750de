# emr-ray-operator — developer entry points.
#   make demo    build and start the local control plane, run the operator against the EMR
#                simulator, create an example workspace, show the mirrors
#   make test    the whole test suite (what .ci/run runs)
#   make bench   benchmarks (prints figures)
#   make fuzz    a short cargo-fuzz run of every parser of outside input (not part of `test`)
SHELL := /bin/bash
KCP := tests/control-plane/kcp.sh
TOOLS := tests/tools/tools.sh
CARGO ?= cargo

.PHONY: demo test lint unit control-plane control-plane-down bench crds fuzz

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

# Scale benchmark (100 workspaces x 100 clusters against the local control plane: idle RSS,
# scale points at 1,000 and 5,000 mirrors and the slope of peak RSS, the main run, the raw
# writer, two shards; every figure beside its goal), then the single-listing benchmark of the
# EMR client (10,000 clusters in one workspace). About 10-15 minutes on 2 cores; skip phases
# with e.g. BENCH_ARGS="--scales '' --shards 0 --raw-writer false --idle-rss false
# --naive-intervals 0".
bench: control-plane
	$(CARGO) build --release --bin emr-ray-operator --bin bench --bin bench-list
	source .cache/kcp/env && ./target/release/bench $(BENCH_ARGS)
	./target/release/bench-list

# Short fuzz run of every target in fuzz/ (nightly + cargo-fuzz, installed when missing), each
# for FUZZ_SECONDS, on a scratch copy of the checked-in seeds (fuzz/corpus/<target>/) so the
# seeds stay small. Crashes land in fuzz/artifacts/<target>/. Not part of `make test`.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS ?= listing_body error_body retry_after endpoint duration quantities sign_input
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
