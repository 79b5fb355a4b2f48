#!/usr/bin/env bash
# CI for the board builds (issue 9): on a fresh Debian x86_64 machine, install the cross tools, build
# the firmware for aarch64 with JetPack 5's glibc floor, check the floor, run the aarch64 host-sim
# binary under qemu-aarch64 and compare its summary with the x86_64 run on the same slice, and build
# and check the orin-nano-8gb Debian package. Called from .ci/run; also runs alone:
#   .ci/cross.sh
# Environment: CARGO_TARGET_DIR for the cross builds (default target/cross); JETLINK_CROSS_TRACT=0
# skips the (slow) tract slice under qemu.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cross}
PKG_BOARD=orin-nano-8gb
GLIBC_MAX=2.31
ZIGLANG_VERSION=0.17.1
CARGO_ZIGBUILD_VERSION=0.24.1
t0=$SECONDS
step() { printf '\n=== cross: %s (%d s)\n' "$*" $((SECONDS - t0)); }
fail() { echo "cross: FAIL: $*" >&2; exit 1; }

step "tools"
apt_pkgs=()
command -v qemu-aarch64 >/dev/null || apt_pkgs+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || apt_pkgs+=(gcc-aarch64-linux-gnu)
[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || apt_pkgs+=(libc6-arm64-cross)
command -v aarch64-linux-gnu-readelf >/dev/null || apt_pkgs+=(binutils-aarch64-linux-gnu)
command -v dpkg-deb >/dev/null || apt_pkgs+=(dpkg)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
    sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check \
    "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
command -v cargo-zigbuild >/dev/null || fail "cargo-zigbuild is not on PATH after pip install"
rustup target add aarch64-unknown-linux-gnu
qemu() { qemu-aarch64 -L /usr/aarch64-linux-gnu "$@"; }
echo "cross: $(cargo-zigbuild --version), zig $(python3 -m ziglang version), $(qemu-aarch64 --version | sed -n 1p)"

step "x86_64 host-sim build (the reference)"
CARGO_TARGET_DIR=target cargo build --release
x86=target/release/jetlink

step "aarch64 host-sim build, glibc <= $GLIBC_MAX"
tools/cross/build.sh host-sim
arm="$CARGO_TARGET_DIR/boards/host-sim/jetlink"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The lines that must match exactly between the two architectures.
summary() { grep -E '^  (accuracy kept|per task|executions saved|FLOPs saved) ' "$1"; }
compare() { # name, jetlink run arguments...
    local name=$1; shift
    step "qemu-aarch64 vs x86_64: run $*"
    "$x86" run "$@" --serial "file:$tmp/$name.x86.bin" --state-file "$tmp/$name.x86.state" > "$tmp/$name.x86.txt"
    local t=$SECONDS
    qemu "$arm" run "$@" --serial "file:$tmp/$name.arm.bin" --state-file "$tmp/$name.arm.state" > "$tmp/$name.arm.txt"
    echo "cross: qemu run took $((SECONDS - t)) s"
    summary "$tmp/$name.x86.txt" > "$tmp/$name.x86.sum" || fail "no summary from the x86_64 run: $(cat "$tmp/$name.x86.txt")"
    summary "$tmp/$name.arm.txt" > "$tmp/$name.arm.sum" || fail "no summary from the aarch64 run: $(cat "$tmp/$name.arm.txt")"
    grep -q '^  accuracy kept' "$tmp/$name.arm.sum" && grep -q '^  executions saved' "$tmp/$name.arm.sum" \
        || fail "summary lines missing"
    if ! diff -u "$tmp/$name.x86.sum" "$tmp/$name.arm.sum"; then
        fail "the aarch64 summary differs from the x86_64 one ($name)"
    fi
    cat "$tmp/$name.arm.sum"
    [ -s "$tmp/$name.arm.bin" ] || fail "the aarch64 run wrote no serial telemetry"
}
compare replay --engines replay --frames 300 -q
if [ "${JETLINK_CROSS_TRACT:-1}" != 0 ]; then
    compare tract --engines tract --frames 20 -q
fi

step "qemu-aarch64: a camera that is not there (--source 'gst:nvarguscamerasrc sensor-id=0')"
# The camera support is compiled in (a gst-launch-1.0 child process); on this host the source is
# missing (no NVIDIA plugin, or no GStreamer at all): the run must say so and exit non-zero, cleanly.
cam_rc=0
# Replay engines (aligned with the reference) keep tract's model loading out of the qemu time; the
# source opens the same way with any engines.
qemu "$arm" run --engines replay --reference-aligned --frames 30 -q --source 'gst:nvarguscamerasrc sensor-id=0' \
    --serial "file:$tmp/camera.bin" --state-file "$tmp/camera.state" > "$tmp/camera.out" 2> "$tmp/camera.err" || cam_rc=$?
cat "$tmp/camera.err"
[ "$cam_rc" = 1 ] || fail "a missing camera: exit status $cam_rc, expected 1"
grep -q 'panicked' "$tmp/camera.err" && fail "a missing camera made jetlink panic"
grep -q "frame source gst:nvarguscamerasrc sensor-id=0: the pipeline gave no frame" "$tmp/camera.err" \
    || fail "a missing camera is not reported with its pipeline"
echo "cross: a missing camera is reported and exits $cam_rc"

step "aarch64 $PKG_BOARD build, glibc <= $GLIBC_MAX, with a throwaway bundle key"
# The Jetson boards refuse to build with the demo key (its private half is committed): CI trusts a
# key generated for this run only, passed as JETLINK_BUNDLE_KEY (boards/README.md).
if JETLINK_BUNDLE_KEY= JETLINK_BOARD=$PKG_BOARD cargo check --release -q 2> "$tmp/demo-key.txt"; then
    fail "the $PKG_BOARD build accepted the demo bundle key"
fi
grep -q 'trusts the demo bundle key' "$tmp/demo-key.txt" || fail "the demo-key refusal does not say why: $(cat "$tmp/demo-key.txt")"
JETLINK_BUNDLE_KEY=$("$x86" keygen --out "$tmp/throwaway.key" 2>/dev/null)
export JETLINK_BUNDLE_KEY
tools/cross/build.sh "$PKG_BOARD"
board_bin="$CARGO_TARGET_DIR/boards/$PKG_BOARD/jetlink"
qemu "$board_bin" boards > "$tmp/boards.txt"
grep -q "$PKG_BOARD" "$tmp/boards.txt" || fail "jetlink boards does not name $PKG_BOARD: $(cat "$tmp/boards.txt")"

step "package jetlink-$PKG_BOARD"
deb=$(tools/cross/package.sh "$PKG_BOARD" "$board_bin" | sed -n 's/^package.sh: //p')
[ -f "$deb" ] || fail "no package"
dpkg-deb -I "$deb"
dpkg-deb -c "$deb" > "$tmp/contents.txt"
cat "$tmp/contents.txt"
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = "jetlink-$PKG_BOARD" ] || fail "Package: $(field Package)"
[ "$(field Architecture)" = arm64 ] || fail "Architecture: $(field Architecture)"
grep -Eq '^libc6 \(>= 2\.[0-9]+\)' <<<"$(field Depends)" || fail "Depends: $(field Depends)"
for f in ./usr/bin/jetlink ./etc/jetlink/jetlink.conf ./lib/systemd/system/jetlink.service \
    ./lib/udev/rules.d/60-jetlink-serial.rules ./usr/share/jetlink/demo/manifest.toml \
    ./usr/share/jetlink/demo/demo.bundle ./usr/share/jetlink/demo/stream.jls.gz \
    ./usr/share/jetlink/demo/reference.jlr.gz ./usr/share/doc/jetlink-$PKG_BOARD/install.md; do
    grep -q " $f\$" "$tmp/contents.txt" || fail "the package lacks $f"
done
grep -Eq '^-rwxr-xr-x root/root .* \./usr/bin/jetlink$' "$tmp/contents.txt" || fail "/usr/bin/jetlink mode or owner"
for m in $(git ls-files demo/models); do
    grep -q " ./usr/share/jetlink/$m\$" "$tmp/contents.txt" || fail "the package lacks $m"
done
dpkg-deb -x "$deb" "$tmp/root"
dpkg-deb -e "$deb" "$tmp/root/DEBIAN"
aarch64-linux-gnu-strip --strip-debug -o "$tmp/jetlink.stripped" "$board_bin"
cmp "$tmp/jetlink.stripped" "$tmp/root/usr/bin/jetlink" || fail "the packaged binary is not the $PKG_BOARD build"
tools/cross/check-glibc.sh "$tmp/root/usr/bin/jetlink" "$GLIBC_MAX"
serial=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["serial"]["device"])' "boards/$PKG_BOARD.toml")
grep -qx "JETLINK_SERIAL=$serial" "$tmp/root/etc/jetlink/jetlink.conf" || fail "jetlink.conf does not name $serial"
unit="$tmp/root/lib/systemd/system/jetlink.service"
grep -qx "Conflicts=serial-getty@${serial#/dev/}.service" "$unit" || fail "the unit does not conflict with the getty on $serial"
grep -q '^Restart=on-failure$' "$unit" && grep -q '^WantedBy=multi-user.target$' "$unit" || fail "unit: Restart/WantedBy"
grep -q "systemctl mask \"\$GETTY\"" "$tmp/root/DEBIAN/postinst" \
    && grep -qx "GETTY=serial-getty@${serial#/dev/}.service" "$tmp/root/DEBIAN/postinst" || fail "postinst does not mask the getty"
for s in postinst prerm postrm; do sh -n "$tmp/root/DEBIAN/$s" || fail "$s: syntax"; done
(cd "$tmp/root" && md5sum --quiet -c DEBIAN/md5sums) || fail "md5sums"
if command -v systemd-analyze >/dev/null; then
    # The unit as systemd reads it (ExecStart's binary must exist, hence the symlink for the check).
    sed "s|/usr/bin/jetlink|$tmp/root/usr/bin/jetlink|; s|^EnvironmentFile=.*|EnvironmentFile=$tmp/root/etc/jetlink/jetlink.conf|" \
        "$unit" > "$tmp/jetlink.service"
    out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$tmp/jetlink.service" 2>&1 || true)
    echo "$out" | grep -v -e 'serial-getty@' -e '^$' | grep -i -e 'jetlink.service' && fail "systemd-analyze verify: $out"
    echo "cross: systemd-analyze verify: ok"
fi

step "done: $deb"
echo "cross: all checks passed in $(((SECONDS - t0) / 60)) min $(((SECONDS - t0) % 60)) s"
