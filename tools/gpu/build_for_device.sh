#!/usr/bin/env bash
# Build the CUDA test binary and the gpu_bench example here and copy them to .gpu/ (ignored through
# .git/info/exclude), for tools/gpu/run_on_device.sh on a machine without a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
mkdir -p .gpu
test_bin=$(cargo test --release --features cuda --test cuda --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import sys, json
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])')
cargo build --release --features cuda --example gpu_bench
# Stripped and compressed: what the device run carries must stay well under 64 MiB.
for pair in "$test_bin:cuda_tests" "target/release/examples/gpu_bench:gpu_bench"; do
    strip -o ".gpu/${pair##*:}" "${pair%%:*}"
    gzip -9 -f ".gpu/${pair##*:}"
done
ls -la .gpu
