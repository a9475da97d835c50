#!/usr/bin/env bash
# Fetch, here, the wheels the GPU machine lacks (its Python is 3.12; it has torch, transformers,
# huggingface_hub, safetensors, numpy, pillow, opencv, pandas, scipy): diffusers and its one missing need.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
for pkg in diffusers==0.42.1 importlib_metadata==10.2.0; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "$pkg"
done
ls -la .whl
