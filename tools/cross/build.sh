#!/usr/bin/env bash
# Build the firmware for one board, with JetPack 5's glibc floor, and check the floor.
#   tools/cross/build.sh orin-nano-8gb
# is exactly the documented command
#   JETLINK_BOARD=orin-nano-8gb cargo zigbuild --release --target aarch64-unknown-linux-gnu.2.31 --no-default-features --features fleet
# (any board but host-sim: without the `sim` feature, with `fleet`) run with CARGO_TARGET_DIR=target/cross (so it never fights a host build over target/), followed by
# a copy of the binary to target/cross/boards/BOARD/jetlink and tools/cross/check-glibc.sh on it.
# Needs: rustup target add aarch64-unknown-linux-gnu; pip install ziglang cargo-zigbuild.
set -euo pipefail
board=${1:?usage: tools/cross/build.sh BOARD   (a name from boards/*.toml)}
cd "$(dirname "$0")/../.."
[ -f "boards/$board.toml" ] || { echo "build.sh: no board file boards/$board.toml" >&2; exit 2; }
glibc=${JETLINK_GLIBC:-2.31}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cross}
# A board build leaves simulation out (`sim` feature: replay engines, the soak, test fixtures) and
# keeps fleet membership (`fleet`: MQTT with rustls/ring, which zig cross-compiles); the simulated
# board keeps the defaults, for the qemu comparison in CI.
features=()
[ "$board" = host-sim ] || features=(--no-default-features --features fleet)
JETLINK_BOARD=$board cargo zigbuild --release --target "aarch64-unknown-linux-gnu.$glibc" "${features[@]}"
out="$CARGO_TARGET_DIR/boards/$board"
mkdir -p "$out"
cp "$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release/jetlink" "$out/jetlink"
tools/cross/check-glibc.sh "$out/jetlink" "$glibc"
echo "build.sh: $out/jetlink"
