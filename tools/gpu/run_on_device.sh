#!/usr/bin/env bash
# Run on the lent GPU machine (no Rust there): the prebuilt CUDA test binary and gpu_bench example
# carried in .gpu/ (see tools/gpu/build_for_device.sh), then the PyTorch baseline. Results to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-target/gpu-out}
mkdir -p "$OUT" /tmp/bin
for b in cuda_tests gpu_bench; do gunzip -c ".gpu/$b.gz" > "/tmp/bin/$b" && chmod +x "/tmp/bin/$b"; done
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
# cudarc looks for libnvrtc.so / .so.12 / .so.11; CUDA 13 ships .so.13: link it under a known name.
lib=$(ls /usr/local/cuda/lib64/libnvrtc.so* /usr/local/cuda*/targets/x86_64-linux/lib/libnvrtc.so* 2>/dev/null | grep -v builtins | head -1)
[ -z "$lib" ] && lib=$(python3 -c 'import nvidia.cuda_nvrtc as m, glob, os; print(sorted(glob.glob(os.path.join(list(m.__path__)[0], "lib", "libnvrtc.so*")))[0])' 2>/dev/null)
echo "NVRTC: $lib"
mkdir -p /tmp/nvrtc && ln -sf "$lib" /tmp/nvrtc/libnvrtc.so
export LD_LIBRARY_PATH="/tmp/nvrtc:$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export JETLINK_ROOT=$PWD JETLINK_CACHE_DIR=/tmp/jetlink-cache RUST_LOG=info
echo "== GPU tests"
/tmp/bin/cuda_tests --nocapture --test-threads=1 2>&1 | tee "$OUT/tests.log"
echo "tests exit: ${PIPESTATUS[0]}"
echo "== benchmark"
/tmp/bin/gpu_bench "$PWD" "$OUT" 2>&1 | tee "$OUT/bench.log"
echo "== PyTorch eager baseline"
PYTHONUNBUFFERED=1 python3 tools/gpu/torch_links.py "$OUT" 2>&1 | tee "$OUT/torch.log"
rm -f "$OUT"/*.bin
