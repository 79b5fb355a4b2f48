#!/usr/bin/env bash
# Fail unless BINARY is an aarch64 ELF whose highest required GLIBC symbol version is at most MAX
# (default 2.31, JetPack 5's glibc). Prints the versions it needs and the shared libraries.
#   tools/cross/check-glibc.sh target/cross/aarch64-unknown-linux-gnu/release/jetlink [2.31]
set -euo pipefail
bin=${1:?usage: check-glibc.sh BINARY [MAX]}
max=${2:-2.31}
readelf=$(command -v aarch64-linux-gnu-readelf || command -v readelf) \
    || { echo "check-glibc: no readelf (apt-get install binutils-aarch64-linux-gnu)" >&2; exit 2; }

machine=$("$readelf" -h "$bin" | sed -n 's/^ *Machine: *//p')
[ "$machine" = AArch64 ] || { echo "check-glibc: $bin is for '$machine', not AArch64" >&2; exit 1; }

# Only the version *needs* (what the binary requires of its libraries), not definitions.
needs=$("$readelf" -V -W "$bin" | sed -n '/^Version needs section/,/^Version [a-z]* section/p' \
    | grep -o 'Name: GLIBC_[0-9][0-9.]*' | sed 's/Name: GLIBC_//' | sort -u -V)
[ -n "$needs" ] || { echo "check-glibc: $bin requires no GLIBC versions (static?)" >&2; exit 1; }
highest=$(tail -n1 <<<"$needs")
libs=$("$readelf" -d -W "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
echo "check-glibc: $bin: GLIBC versions required: $(tr '\n' ' ' <<<"$needs")"
echo "check-glibc: highest GLIBC_$highest (limit $max); libraries: $libs"
if [ "$(printf '%s\n%s\n' "$highest" "$max" | sort -V | tail -n1)" != "$max" ]; then
    echo "check-glibc: FAIL: GLIBC_$highest > $max: the binary will not start on JetPack 5" >&2
    "$readelf" -V -W "$bin" | grep -n "GLIBC_$highest" >&2 || true
    exit 1
fi
echo "check-glibc: OK"
