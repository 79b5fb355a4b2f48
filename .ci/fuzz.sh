#!/usr/bin/env bash
# Fuzzing in CI. Always: the committed seed corpus and every past finding through the targets'
# checks, as a stable-Rust test (tests/fuzz_regressions.rs; `cargo test --release` runs it too).
# With FUZZ_SECONDS=N (and cargo-fuzz installed: `cargo install cargo-fuzz`): each target fuzzed
# for N seconds on top of that corpus. cargo-fuzz wants nightly; on stable, RUSTC_BOOTSTRAP=1 and
# `-s none` (no sanitizer; libFuzzer's coverage-guided search and Rust's own checks, with debug
# assertions) work. New corpus entries go to a scratch folder, not into the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
cargo test --release --test fuzz_regressions
secs="${FUZZ_SECONDS:-0}"
if [ "$secs" -gt 0 ]; then
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "FUZZ_SECONDS=$secs but cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2
    exit 1
  fi
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  for t in bundle wire board manifest stream view fleet; do
    mkdir -p "$scratch/$t"
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none "$t" "$scratch/$t" "corpus/$t" -- \
      -max_total_time="$secs" -max_len=16384 -print_final_stats=1)
  done
fi
