#!/usr/bin/env bash
# `make gpu-check`: does the GPU path (@tensorflow/tfjs-node-gpu, TensorFlow 2.9.1 built for CUDA 11.2 + cuDNN 8.1)
# run on this machine's GPU? Prints what it finds, step by step, and never stops at the first failure: a missing
# piece is the finding. Run it inside the trainer's GPU image (deploy/docker/Dockerfile.gpu) on a GPU node.
#
# TF 2.9.1 ships kernels for compute capabilities up to 8.6 (Ampere) plus PTX for 8.0; a Hopper (9.0) card can
# only run that PTX through the driver's JIT, if at all: this script is how to find out rather than assume.
set -uo pipefail
cd "$(dirname "$0")/../.."
DENO=${DENO:-$(command -v deno || echo .tools/node_modules/.bin/deno)}
STEPS=${GPU_CHECK_STEPS:-200}
status=0
say() { printf '\n== %s\n' "$*"; }

say "GPU"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader || status=1
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1)
  case "$cap" in
    9.*|1[0-9].*) echo "compute capability $cap: newer than TF 2.9.1's kernels (<= 8.6); only PTX JIT can run it" ;;
  esac
else
  echo "no nvidia-smi: no NVIDIA GPU visible here (the tensorflow backend would run on the CPU, if it loads)"
  status=1
fi

say "CUDA libraries"
for lib in libcudart.so.11.0 libcudnn.so.8 libcublas.so.11; do
  if ldconfig -p 2>/dev/null | grep -q "$lib"; then echo "$lib: found"; else echo "$lib: MISSING"; status=1; fi
done

say "@tensorflow/tfjs-node-gpu"
if [ -d node_modules/@tensorflow/tfjs-node-gpu ]; then
  echo "installed: $(grep -m1 '"version"' node_modules/@tensorflow/tfjs-node-gpu/package.json)"
else
  echo "not installed (the GPU image installs it; npm cannot here without its libtensorflow download)"
  status=1
fi

say "train step, backend tensorflow (vs the native CPU engine)"
BERTFORGE_BACKEND=tensorflow "$DENO" task bench train --backend tensorflow --no-torch --no-forward --steps 10 2>&1 | tail -5 || status=1

say "a ${STEPS}-step pretraining job on the tensorflow backend"
BERTFORGE_BACKEND=tensorflow "$DENO" task bench trainer_job --backend tensorflow --steps "$STEPS" 2>&1 | tail -5 || status=1

say "verdict"
if [ "$status" = 0 ]; then echo "the GPU path ran end to end"; else echo "the GPU path did not run end to end: see above"; fi
exit "$status"
