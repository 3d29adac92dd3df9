# The one command surface for people and CI.
CARGO ?= cargo

.PHONY: setup test demo lint build bench scale fuzz clean

setup:
	@scripts/setup

build: setup
	$(CARGO) build --workspace --release

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) check --manifest-path fuzz/Cargo.toml
	# The lean CNI plugin (embedded datastore only, no etcd/gRPC) still builds.
	$(CARGO) clippy -p calico-cni --no-default-features --features sqlite -- -D warnings

test: lint
	$(CARGO) test --workspace

# The main job: a three-node cluster in namespaces (DEMO_ARGS=--keep leaves it up).
demo: setup
	scripts/demo $(DEMO_ARGS)

bench: setup
	$(CARGO) bench --workspace

# The scale test (issue 17): etcd, a fan-out, 1,000 simulated nodes, 50,000
# workloads, 1,000 policies, 500 fan-out clients, 50 direct datastore
# clients, 3 real nodes; one table. Then SYNs across refreshes at 86,000
# set elements (the `agent refreshing` line).
scale: setup
	$(CARGO) build --release --workspace --bins
	$(CARGO) bench -p calico-lab --bench scale
	$(CARGO) test --release -p calico-node --test refresh -- --nocapture

# Coverage-guided fuzzing of the parsers (cargo-fuzz; SECS per target).
SECS ?= 60
fuzz: setup
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in $$(RUSTC_BOOTSTRAP=1 cargo fuzz list); do \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run $$t -- -max_total_time=$(SECS) || exit 1; done

clean:
	$(CARGO) clean
