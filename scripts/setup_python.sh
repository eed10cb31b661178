#!/usr/bin/env bash
# Creates the project's Python virtual environment (default build/venv, git-ignored) with what the
# Python package and its tests need: PyTorch (CPU use), transformers, NumPy, pytest, nanobind and
# scikit-build-core, all from PyPI. Idempotent and quiet: a venv whose pinned packages are all
# present is left as it is (a second run takes about a second).
#
# PyTorch: the only x86-64 Linux torch wheels on PyPI are CUDA builds (torch 2.15.0: a 540 MB
# wheel whose declared dependencies add the whole CUDA 13.2 runtime, cuda-bindings and triton).
# Even its CPU library links libcudart and libcupti, so `import torch` needs the CUDA runtime
# libraries that its .so files name (readelf -d: NEEDED). We install the wheel with --no-deps,
# then exactly those libraries (below) and torch's pure-Python dependencies; triton (torch.compile
# on GPUs), cuda-bindings, cuda-pathfinder, nvtx and cccl are left out (nothing here uses them).
# On a GPU machine with its own torch, pass VENV_SYSTEM_SITE=1 to reuse the installed torch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-build/venv}
PY=${PYTHON:-python3}

TORCH=torch==2.15.0
# The CUDA libraries torch 2.15.0's shared objects link (versions from its METADATA).
TORCH_LIBS=(nvidia-cuda-runtime==13.2.86 nvidia-cuda-cupti==13.2.86 nvidia-cuda-nvrtc==13.2.86
  nvidia-cublas==13.4.1.3 nvidia-cufft==12.2.0.57 nvidia-cufile==1.17.1.22
  nvidia-cusolver==12.2.0.11 nvidia-cusparse==12.7.10.12 nvidia-nvjitlink==13.5.37
  nvidia-cudnn-cu13==9.26.0.51 nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.30.7
  nvidia-nvshmem-cu13==3.7.2)
TORCH_PYDEPS=(filelock "typing-extensions>=4.13.0" "setuptools>=77.0.3" "sympy>=1.13.3"
  "networkx>=2.5.1" jinja2 "fsspec>=0.8.5")
# gguf + accelerate: transformers loading the default GGUF model (tests/python/test_hf_gguf.py).
PKGS=(transformers==5.23.0 numpy pytest nanobind==3.1.0 scikit-build-core==1.1.2 gguf==0.19.0
  accelerate==1.16.0)

if [[ ! -x $VENV/bin/python ]]; then
  echo "setup_python: creating $VENV" >&2
  if [[ ${VENV_SYSTEM_SITE:-0} == 1 ]]; then
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
VPY=$VENV/bin/python

# Everything pinned already there (and torch importable): nothing to do.
if "$VPY" - "${PKGS[@]}" <<'PYEOF' 2>/dev/null; then exit 0; fi
import sys
from importlib import metadata
for spec in sys.argv[1:]:
    name, _, ver = spec.partition("==")
    have = metadata.version(name)
    if ver and have != ver:
        raise SystemExit(1)
import torch  # noqa: F401  (fails when a CUDA library it links is missing)
PYEOF

# pip's output goes to a log shown only on failure (its resolver warns about the CUDA packages
# left out above on every install).
pip() {
  local log
  log=$(mktemp)
  if ! "$VPY" -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}
if ! "$VPY" -c "import torch" 2>/dev/null; then
  echo "setup_python: installing $TORCH (CPU use; ~2.6 GB with the CUDA libraries it links)" >&2
  pip --no-deps "$TORCH" "${TORCH_LIBS[@]}"
  pip "${TORCH_PYDEPS[@]}"
fi
echo "setup_python: installing ${PKGS[*]}" >&2
pip "${PKGS[@]}"
"$VPY" -c "import torch, transformers, numpy, nanobind, scikit_build_core"
