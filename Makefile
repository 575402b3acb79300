# kata-swift: a Kata-Containers-style containerd shim v2 in Swift.
# `make demo-ttrpc` runs the main job (for now: the ttRPC stack against containerd's Go ttRPC);
# `make test` runs every test. Both install what they need (Debian packages) themselves.
SHELL := /bin/bash
.DEFAULT_GOAL := build

# Every Debian package the project needs so far.
DEBS := protobuf-c-compiler libprotobuf-c-dev protobuf-compiler libprotobuf-dev python3-protobuf \
        libseccomp-dev pkg-config golang-go golang-github-containerd-ttrpc-dev util-linux \
        qemu-system-x86 gcc libc6-dev
SWIFT ?= swift
GO_ENV := GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=$(CURDIR)/.build/gocache
GO_PEER := .build/interop/ttrpc-go-peer
FUZZ_SECONDS ?= 60

# Guest image (packaging/guest): Debian's generic kernel (the cloud flavour lacks 9p), pinned by
# ABI; the exact package version used is recorded in build/guest/manifest.json.
KERNEL_PACKAGE ?= linux-image-6.1.0-50-amd64-unsigned
GUEST := build/guest
AGENT_BIN := .build/release/kata-agent

.PHONY: deps protos check-protos build release interop-peer test bench-ttrpc bench-boot bench-guest fuzz-ttrpc demo-ttrpc \
        image agent-release rootfs clean

## deps: install the Debian packages (idempotent; apt-get update runs only when something is missing)
deps:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

## protos: regenerate the protobuf-c C code and the Swift value types from Protos/
protos: deps
	Scripts/gen-protos.sh

## check-protos: fail if the committed generated code differs from what `make protos` produces
check-protos: deps
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	Scripts/gen-protos.sh $$tmp && \
	diff -r $$tmp/Sources/CProtocols Sources/CProtocols && \
	diff -r $$tmp/Sources/Protocols/Generated Sources/Protocols/Generated && \
	echo "generated code matches Protos/"

build: deps
	$(SWIFT) build --build-tests

release: deps
	$(SWIFT) build -c release --product ttrpc-peer

## interop-peer: the Go ttRPC reference peer, built offline against Debian's Go sources
interop-peer: deps
	@mkdir -p .build/interop
	cd Tests/Interop/goPeer && $(GO_ENV) go build -o $(CURDIR)/$(GO_PEER) .

## image: the guest kernel + initramfs (kata-agent as /init) under build/guest; incremental
image: agent-release
	@$(MAKE) --no-print-directory $(GUEST)/initramfs.cpio $(GUEST)/floor.cpio

agent-release: deps
	$(SWIFT) build -c release --product kata-agent --static-swift-stdlib -Xlinker -s

$(GUEST)/cache/kernel.deb:
	@mkdir -p $(GUEST)/cache
	cd $(GUEST)/cache && rm -f $(KERNEL_PACKAGE)_*.deb && \
	  { apt-get download $(KERNEL_PACKAGE) 2>/dev/null || { apt-get update -qq && apt-get download $(KERNEL_PACKAGE); }; } && \
	  mv $(KERNEL_PACKAGE)_*.deb kernel.deb

$(GUEST)/initramfs.cpio: $(AGENT_BIN) packaging/guest/build-image.py $(GUEST)/cache/kernel.deb
	python3 packaging/guest/build-image.py --kernel-deb $(GUEST)/cache/kernel.deb --init $(AGENT_BIN) --out $(GUEST)

# The boot-time floor for bench-boot: same kernel, an init that powers off at once.
$(GUEST)/poweroff-init: packaging/guest/poweroff-init.c
	@mkdir -p $(GUEST)
	gcc -static -Os -s -o $@ $<

$(GUEST)/floor.cpio: $(GUEST)/poweroff-init packaging/guest/build-image.py $(GUEST)/cache/kernel.deb
	python3 packaging/guest/build-image.py --kernel-deb $(GUEST)/cache/kernel.deb --init $(GUEST)/poweroff-init \
	  --out $(GUEST) --name floor.cpio --no-modules

## rootfs: the busybox-static test container rootfs under build/rootfs/busybox
rootfs: build/rootfs/busybox/bin/busybox

build/rootfs/busybox/bin/busybox: packaging/test-rootfs/build-rootfs.sh
	packaging/test-rootfs/build-rootfs.sh build/rootfs/busybox build/rootfs/cache

## test: every test (unit, wire vectors, bad input, Go interop, generated-code drift, real VMs)
test: deps check-protos build interop-peer image rootfs
	$(SWIFT) test --no-parallel

## bench-boot: QEMU spawn -> agent Health.Check vs the same boot with a power-off init
bench-boot: image
	$(SWIFT) build -c release --product kata-bench
	.build/release/kata-bench boot --guest $(GUEST) --runs $${RUNS:-5}

## bench-guest: exec latency, stdout and stdin throughput through the agent (one VM)
bench-guest: image rootfs
	$(SWIFT) build -c release --product kata-bench
	.build/release/kata-bench guest --guest $(GUEST) --rootfs build/rootfs/busybox --runs $${RUNS:-100} --mib $${MIB:-256} --vcpus $${VCPUS:-1}

## bench-ttrpc: unary echo rps and latency, Swift server vs Go server, same Go client
bench-ttrpc: release interop-peer
	bench/ttrpc.sh

## fuzz-ttrpc: libFuzzer over the frame parser and request decoding, FUZZ_SECONDS long
fuzz-ttrpc: deps
	KATA_FUZZ=1 $(SWIFT) build --build-path .build/fuzz --product ttrpc-fuzz \
		-Xswiftc -sanitize=address -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp \
		-Xlinker $$(ls /opt/swift/usr/lib/swift/clang/lib/linux/libclang_rt.fuzzer_no_main-x86_64.a 2>/dev/null || \
		            ls $$(dirname $$(dirname $$(readlink -f $$(which swift))))/lib/swift/clang/lib/linux/libclang_rt.fuzzer_no_main-x86_64.a) \
		-Xlinker -lstdc++
	@mkdir -p .build/fuzz/corpus
	.build/fuzz/debug/ttrpc-fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 .build/fuzz/corpus

## demo-ttrpc: the main job for now: Swift server <-> Go client and Go server <-> Swift client
demo-ttrpc: build interop-peer
	bench/demo-ttrpc.sh

clean:
	rm -rf .build build
