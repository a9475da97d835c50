#!/usr/bin/env bash
# The GPU benchmarks in one call (see benchmarks/gpu_run.py and BENCHMARKS.md):
#   bash benchmarks/gpu_run.sh OUT [--budget SECONDS] [--smoke]
# The GPU machine has PyTorch, transformers and the rest, but not diffusers: it comes as wheels
# carried in .whl/ (ignored by git; `bash benchmarks/gpu_wheels.sh` fetches them here).
set -u
out="${1:?usage: gpu_run.sh OUT [--budget SECONDS] [--smoke]}"
shift
cd "$(dirname "$0")/.."
if ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_run: no diffusers and no wheels in .whl/ (run benchmarks/gpu_wheels.sh here first)"; exit 2; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec python3 benchmarks/gpu_run.py "$out" "$@"
