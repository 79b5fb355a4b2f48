#!/usr/bin/env bash
# Compile-check kernels/*.cu for the Jetson GPUs (sm_72 Xavier, sm_87 Orin) without a GPU or a
# CUDA toolkit: NVRTC from PyPI (nvidia-cuda-nvrtc-cu12, 12.x still targets sm_72) in a venv under
# target/ (gitignored), driven through ctypes by tools/gpu/nvrtc_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/kernel-check/venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'nvidia-cuda-nvrtc-cu12>=12.2,<13'
fi
lib=$("$venv/bin/python" -c 'import nvidia.cuda_nvrtc, os; print(os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], "lib"))')
export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$venv/bin/python" tools/gpu/nvrtc_check.py "$lib/libnvrtc.so.12" compute_72,compute_87 kernels/*.cu
