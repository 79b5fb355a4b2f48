#!/usr/bin/env bash
# Build the TensorRT plans of a jetlink manifest, on the board, with trtexec.
#
# Plans are not portable across TensorRT versions or GPUs, so this runs on the Jetson that will use
# them. For every model it writes, next to the model's ONNX file:
#   <stem>.<board>.trt<major>.<minor>.plan        the serialised engine (batch 1)
#   <stem>.<board>.trt<major>.<minor>.plan.toml   the sidecar: TensorRT version, GPU, precision, ...
# The TensorRT backend (src/engine/tensorrt.rs, feature `tensorrt`) looks plans up by that name and
# refuses one whose sidecar names another TensorRT version, board or GPU. See docs/tensorrt.md.
#
# Usage: tools/trt/build_plans.sh --board NAME [--manifest FILE] [--fp16] [--dla N] [--only a,b]
#                                 [--trtexec PATH] [--force] [--dry-run]
#   --board NAME      jetlink board name (boards/NAME.toml); default $JETLINK_BOARD
#   --manifest FILE   default demo/manifest.toml
#   --fp16            allow FP16 kernels (IO stays FP32, which is what jetlink exchanges)
#   --dla N           run on DLA core N (--useDLACore=N --allowGPUFallback); implies --fp16 (DLA runs
#                     FP16 or INT8 only)
#   --only a,b        only these models (manifest names)
#   --trtexec PATH    default: $TRTEXEC, trtexec on PATH, /usr/src/tensorrt/bin/trtexec (JetPack)
#   --force           rebuild plans that already exist
#   --dry-run         print the trtexec commands, build nothing
# Needs: bash, python3 (standard library only), sha256sum, trtexec.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
board="${JETLINK_BOARD:-}"
manifest="$here/../../demo/manifest.toml"
fp16=0
dla=""
only=""
trtexec="${TRTEXEC:-}"
force=0
dry=0

die() { echo "build_plans.sh: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --board) board="${2:?--board needs a name}"; shift 2 ;;
        --manifest) manifest="${2:?--manifest needs a file}"; shift 2 ;;
        --fp16) fp16=1; shift ;;
        --dla) dla="${2:?--dla needs a core number}"; fp16=1; shift 2 ;;
        --only) only="${2:?--only needs names}"; shift 2 ;;
        --trtexec) trtexec="${2:?--trtexec needs a path}"; shift 2 ;;
        --force) force=1; shift ;;
        --dry-run) dry=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

[[ -n "$board" ]] || die "--board is required (a jetlink board name, e.g. orin-nano-8gb), or set JETLINK_BOARD"
[[ "$board" =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "board name $board: use lower-case letters, digits and -"
[[ -f "$manifest" ]] || die "manifest $manifest not found"
[[ -z "$dla" || "$dla" =~ ^[0-9]+$ ]] || die "--dla $dla: not a core number"
if [[ -z "$trtexec" ]]; then
    if command -v trtexec >/dev/null 2>&1; then
        trtexec="$(command -v trtexec)"
    elif [[ -x /usr/src/tensorrt/bin/trtexec ]]; then
        trtexec=/usr/src/tensorrt/bin/trtexec
    elif [[ $dry -eq 0 ]]; then
        die "trtexec not found: install TensorRT's samples/tools (JetPack: sudo apt install tensorrt, which puts it in /usr/src/tensorrt/bin), or pass --trtexec"
    else
        trtexec=trtexec
    fi
fi
precision=fp32
[[ $fp16 -eq 1 ]] && precision=fp16

# "[TensorRT v8602]" / "[TensorRT v100300]" from trtexec's first line -> 8.6.2 / 10.3.0
# (getInferLibVersion's encoding changed at 10.0).
decode_version() {
    local code="$1"
    if (( code >= 100000 )); then
        echo "$((code / 10000)).$(((code / 100) % 100)).$((code % 100))"
    else
        echo "$((code / 1000)).$(((code / 100) % 10)).$((code % 100))"
    fi
}

# The installed TensorRT's version before building anything, so existing plans can be kept only when
# they are for it: NvInferVersion.h, else the libnvinfer package. Empty if neither says.
probe_version() {
    local d h maj min pat
    for d in "${TENSORRT_INCLUDE_DIR:-}" "${TENSORRT_ROOT:+$TENSORRT_ROOT/include}" \
             /usr/include/aarch64-linux-gnu /usr/include/x86_64-linux-gnu /usr/include; do
        h="$d/NvInferVersion.h"
        [[ -n "$d" && -f "$h" ]] || continue
        maj="$(sed -n 's/^#define NV_TENSORRT_MAJOR \([0-9]*\).*/\1/p' "$h")"
        min="$(sed -n 's/^#define NV_TENSORRT_MINOR \([0-9]*\).*/\1/p' "$h")"
        pat="$(sed -n 's/^#define NV_TENSORRT_PATCH \([0-9]*\).*/\1/p' "$h")"
        [[ -n "$maj" && -n "$min" && -n "$pat" ]] && { echo "$maj.$min.$pat"; return; }
    done
    dpkg-query -W -f='${Version}\n' libnvinfer10 libnvinfer8 2>/dev/null | sed -n 's/^\([0-9]*\.[0-9]*\.[0-9]*\).*/\1/p' | head -n 1
}
installed="$(probe_version || true)"
if [[ -n "$installed" ]]; then
    echo "TensorRT $installed installed (plans named .trt${installed%.*}.plan)"
else
    echo "TensorRT version not found in headers or packages; existing plans are rebuilt" >&2
fi

models="$(python3 "$here/onnx_inputs.py" "$manifest")" || die "cannot read $manifest or its ONNX files"
built=0
skipped=0
failed=()
while IFS=$'\t' read -r name onnx input shape dynamic unsupported; do
    if [[ -n "$only" && ",$only," != *",$name,"* ]]; then
        continue
    fi
    if [[ "$unsupported" != "-" ]]; then
        echo "skip $name: uses operator domain(s) $unsupported, which TensorRT's ONNX parser does not support; run it on the host backend" >&2
        failed+=("$name (unsupported: $unsupported)")
        continue
    fi
    dir="$(dirname "$onnx")"
    stem="$(basename "$onnx" .onnx)"
    args=(--onnx="$onnx")
    shapes=""
    if [[ "$dynamic" == "1" ]]; then
        quoted="$input"
        [[ "$input" == *[:,]* ]] && quoted="'$input'"
        shapes="$quoted:$shape"
        args+=(--shapes="$shapes")
    fi
    [[ $fp16 -eq 1 ]] && args+=(--fp16)
    [[ -n "$dla" ]] && args+=(--useDLACore="$dla" --allowGPUFallback)
    tmp="$dir/.$stem.$board.building.plan"
    args+=(--saveEngine="$tmp")

    if [[ $dry -eq 1 ]]; then
        echo "$trtexec ${args[*]}"
        echo "  -> $dir/$stem.$board.trt<major>.<minor>.plan (+ .toml)"
        continue
    fi
    existing="$dir/$stem.$board.trt${installed%.*}.plan"
    if [[ $force -eq 0 && -n "$installed" && -f "$existing" && -f "$existing.toml" ]] &&
        grep -q "^tensorrt = \"$installed\"" "$existing.toml" &&
        grep -q "^precision = \"$precision\"" "$existing.toml" &&
        [[ "$(sed -n 's/^dla-core = //p' "$existing.toml")" == "$dla" ]]; then
        echo "keep $existing (use --force to rebuild)"
        skipped=$((skipped + 1))
        continue
    fi

    log="$dir/.$stem.$board.trtexec.log"
    echo "build $name: $trtexec ${args[*]}"
    if ! "$trtexec" "${args[@]}" >"$log" 2>&1; then
        echo "  trtexec failed; last lines of $log:" >&2
        tail -n 15 "$log" >&2
        rm -f "$tmp"
        failed+=("$name (trtexec failed, see $log)")
        continue
    fi
    code="$(sed -n 's/.*\[TensorRT v\([0-9][0-9]*\)\].*/\1/p' "$log" | head -n 1)"
    if [[ -z "$code" ]]; then
        rm -f "$tmp"
        failed+=("$name (no \"[TensorRT vNNNN]\" line in $log)")
        continue
    fi
    version="$(decode_version "$code")"
    short="${version%.*}"
    if [[ -n "$installed" && "$installed" != "$version" ]]; then
        echo "  warning: trtexec ran TensorRT $version, the headers/packages say $installed" >&2
    fi
    gpu="$(sed -n 's/.*Selected Device: *\(.*\)$/\1/p' "$log" | head -n 1)"
    cc="$(sed -n 's/.*Compute Capability: *\([0-9.]*\).*/\1/p' "$log" | head -n 1)"
    plan="$dir/$stem.$board.trt$short.plan"
    mv -f "$tmp" "$plan"
    sha="$(sha256sum "$onnx" | cut -d' ' -f1)"
    {
        echo "# written by tools/trt/build_plans.sh; checked by jetlink before the plan is loaded"
        echo "format = 1"
        echo "onnx = \"$(basename "$onnx")\""
        echo "onnx-sha256 = \"$sha\""
        echo "board = \"$board\""
        echo "tensorrt = \"$version\""
        echo "gpu = \"${gpu//\"/}\""
        echo "compute-capability = \"${cc:-unknown}\""
        echo "precision = \"$precision\""
        [[ -n "$dla" ]] && echo "dla-core = $dla"
        echo "shapes = \"${shapes//\"/}\""
        echo "built = \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\""
    } >"$plan.toml"
    [[ -z "$gpu" ]] && sed -i 's/^gpu = ""$/gpu = "unknown"/' "$plan.toml"
    echo "  -> $plan (TensorRT $version, ${gpu:-unknown GPU}, compute ${cc:-unknown}, $precision)"
    built=$((built + 1))
done <<<"$models"

echo "built $built, kept $skipped, failed ${#failed[@]}"
for f in "${failed[@]+"${failed[@]}"}"; do
    echo "  not built: $f"
done
[[ ${#failed[@]} -eq 0 ]]
