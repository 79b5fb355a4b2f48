#!/usr/bin/env bash
# Build the Debian package jetlink-BOARD_VERSION-1_arm64.deb from the board's cross-built binary.
#   tools/cross/package.sh orin-nano-8gb [BINARY]
# BINARY defaults to target/cross/boards/BOARD/jetlink (tools/cross/build.sh BOARD makes it; this
# script runs it when the binary is missing). The package goes to target/cross/deb/. Only dpkg-deb
# and python3 (3.11+, for tomllib) are needed. Contents:
#   /usr/bin/jetlink                              the firmware for BOARD
#   /usr/share/jetlink/demo/...                   the demo workload and its bundle (git ls-files demo)
#   /etc/jetlink/jetlink.conf                     service arguments (a conffile)
#   /lib/systemd/system/jetlink.service           the service (packaging/jetlink.service.in)
#   /lib/udev/rules.d/60-jetlink-serial.rules     the serial tty to group dialout
#   /usr/share/doc/jetlink-BOARD/                 install.md, licences of the demo assets
set -euo pipefail
board=${1:?usage: tools/cross/package.sh BOARD [BINARY]}
cd "$(dirname "$0")/../.."
root_dir=$PWD
[ -f "boards/$board.toml" ] || { echo "package.sh: no board file boards/$board.toml" >&2; exit 2; }
target_dir=${CARGO_TARGET_DIR:-target/cross}
bin=${2:-$target_dir/boards/$board/jetlink}
[ -f "$bin" ] || tools/cross/build.sh "$board"
glibc=${JETLINK_GLIBC:-2.31}

# Board facts from the board file (the same file build.rs compiled into the binary).
eval "$(python3 - "boards/$board.toml" <<'PY'
import shlex, sys, tomllib
b = tomllib.load(open(sys.argv[1], "rb"))
s = b["serial"]
for k, v in {"BOARD_NAME": b["name"], "BOARD_DESCRIPTION": b["description"],
             "SERIAL_DEVICE": s["device"], "BAUD": s["baud"], "BUNDLE_KEY": b["bundle-key"]}.items():
    print(f"{k}={shlex.quote(str(v))}")
PY
)"
# Never package a board that trusts the demo key (its private half is committed in demo/keys/): the
# key the binary was built with is JETLINK_BUNDLE_KEY if set, else the board file's bundle-key.
demo_key=$(tr -d ' \n' < demo/keys/demo-insecure.pub)
trusted=${JETLINK_BUNDLE_KEY:-$BUNDLE_KEY}
if [ "$(printf '%s' "$trusted" | tr -d ' \n' | tr 'A-F' 'a-f')" = "$demo_key" ]; then
    echo "package.sh: board $board trusts the demo bundle key ($demo_key), whose private half is committed in demo/keys/; refusing to package it. Make a key with \`jetlink keygen --out <file>\` and build and package with JETLINK_BUNDLE_KEY=<public key> (boards/README.md)" >&2
    exit 2
fi
[ "$BOARD_NAME" = "$board" ] || { echo "package.sh: boards/$board.toml names '$BOARD_NAME'" >&2; exit 2; }
case "$SERIAL_DEVICE" in
    /dev/tty*) ;;
    *) echo "package.sh: board $board writes telemetry to '$SERIAL_DEVICE', not a /dev/tty*: not a board to package" >&2; exit 2 ;;
esac
SERIAL_NAME=${SERIAL_DEVICE#/dev/}
GETTY="serial-getty@$SERIAL_NAME.service"

version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)-${DEB_REVISION:-1}"
maintainer=${DEB_MAINTAINER:-jetlink developers <jetlink@invalid>}

# Depends from the binary itself: libc6 at the highest GLIBC version it needs, libgcc-s1 if it links
# libgcc_s (Rust's unwinder). Anything else it links is an error here, to be added on purpose.
readelf=$(command -v aarch64-linux-gnu-readelf || command -v readelf)
glibc_need=$("$readelf" -V -W "$bin" | grep -o 'Name: GLIBC_[0-9][0-9.]*' | sed 's/Name: GLIBC_//' | sort -u -V | tail -n1)
depends="libc6 (>= $glibc_need)"
for lib in $("$readelf" -d -W "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    case "$lib" in
        libc.so.6|libm.so.6|libdl.so.2|libpthread.so.0|librt.so.1|ld-linux-aarch64.so.1) ;;
        libgcc_s.so.1) depends="$depends, libgcc-s1" ;;
        *) echo "package.sh: the binary links $lib: add its package to Depends in package.sh" >&2; exit 1 ;;
    esac
done
depends="$depends, adduser"

work=$(mktemp -d "${TMPDIR:-/tmp}/jetlink-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
pkg="$work/jetlink-$board"
docdir="$pkg/usr/share/doc/jetlink-$board"
mkdir -p "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/usr/share/jetlink" "$pkg/etc/jetlink" \
    "$pkg/lib/systemd/system" "$pkg/lib/udev/rules.d" "$docdir"

esc() { printf '%s' "$1" | sed -e 's/[&|\\]/\\&/g'; } # a value for a sed replacement
subst() { # template -> stdout
    sed -e "s|@BOARD@|$(esc "$board")|g" -e "s|@BOARD_DESCRIPTION@|$(esc "$BOARD_DESCRIPTION")|g" \
        -e "s|@SERIAL_DEVICE@|$(esc "$SERIAL_DEVICE")|g" -e "s|@SERIAL_NAME@|$(esc "$SERIAL_NAME")|g" \
        -e "s|@BAUD@|$(esc "$BAUD")|g" -e "s|@GETTY@|$(esc "$GETTY")|g" -e "s|@VERSION@|$(esc "$version")|g" \
        -e "s|@MAINTAINER@|$(esc "$maintainer")|g" -e "s|@DEPENDS@|$(esc "$depends")|g" \
        -e "s|@GLIBC_FLOOR@|$(esc "$glibc")|g" "$1"
}

install -m 0755 "$bin" "$pkg/usr/bin/jetlink"
# Without the DWARF line tables (about 100 MB of the binary); symbols stay, so backtraces keep their
# function names. The unstripped binary stays in target/cross/boards/BOARD/ for gdb and addr2line.
if [ "${JETLINK_DEB_STRIP:-1}" != 0 ]; then
    strip_tool=$(command -v aarch64-linux-gnu-strip) \
        || { echo "package.sh: no aarch64-linux-gnu-strip (apt-get install binutils-aarch64-linux-gnu), or JETLINK_DEB_STRIP=0" >&2; exit 2; }
    "$strip_tool" --strip-debug "$pkg/usr/bin/jetlink"
fi
# The demo as committed (tracked files only; no stray outputs). Fall back to the folder outside git.
if git -C "$root_dir" rev-parse --git-dir >/dev/null 2>&1; then
    git ls-files -z demo | while IFS= read -r -d '' f; do
        case "$f" in *.key) continue ;; esac   # a signing key is for the host that builds bundles
        install -D -m 0644 "$f" "$pkg/usr/share/jetlink/$f"
    done
else
    cp -r demo "$pkg/usr/share/jetlink/"
    find "$pkg/usr/share/jetlink/demo" -name '*.key' -delete
fi
[ -f "$pkg/usr/share/jetlink/demo/manifest.toml" ] || { echo "package.sh: no demo/manifest.toml" >&2; exit 1; }
subst packaging/jetlink.conf.in > "$pkg/etc/jetlink/jetlink.conf"
subst packaging/jetlink.service.in > "$pkg/lib/systemd/system/jetlink.service"
subst packaging/60-jetlink-serial.rules.in > "$pkg/lib/udev/rules.d/60-jetlink-serial.rules"
chmod 0644 "$pkg/etc/jetlink/jetlink.conf" "$pkg/lib/systemd/system/jetlink.service" \
    "$pkg/lib/udev/rules.d/60-jetlink-serial.rules"
install -m 0644 docs/install.md "$docdir/install.md"
install -m 0644 demo/LICENSES.md "$docdir/LICENSES-demo.md"
cat > "$docdir/copyright" <<COPY
jetlink $version, built for board $board.
The demo assets in /usr/share/jetlink/demo carry their own licences: see LICENSES-demo.md here.
COPY

for s in postinst prerm postrm; do
    subst "packaging/debian/$s.in" > "$pkg/DEBIAN/$s"
    chmod 0755 "$pkg/DEBIAN/$s"
done
echo /etc/jetlink/jetlink.conf > "$pkg/DEBIAN/conffiles"
installed_size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
sed "s|@INSTALLED_SIZE@|$installed_size|" packaging/debian/control.in > "$work/control.in"
subst "$work/control.in" > "$pkg/DEBIAN/control"
(cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
    > "$pkg/DEBIAN/md5sums"
chmod 0644 "$pkg/DEBIAN/control" "$pkg/DEBIAN/conffiles" "$pkg/DEBIAN/md5sums"

mkdir -p "$target_dir/deb"
deb="$target_dir/deb/jetlink-${board}_${version}_arm64.deb"
# Reproducible: every file dated at the last commit, owned by root.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
find "$pkg" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "package.sh: $deb"
