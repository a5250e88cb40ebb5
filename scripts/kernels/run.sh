#!/usr/bin/env bash
# The kernels alone, outside Python (docs/results/speed.md, sessions 6 and 9): this core's
# multiply-add peak, the hidden pass's per-step product, the hidden kernels and both memory
# kernels, built with the flags cpu_scan.py uses.
#   bash scripts/kernels/run.sh [path/to/engram_kernels.c]   (default: this checkout's)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(realpath "${1:-$here/../../src/enn/ops/engram/csrc/engram_kernels.c}")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags=(-march=native -fopenmp -O3 -fno-math-errno -ffp-contract=fast -std=gnu11)
"${CC:-cc}" -O2 -march=native "$here/peak.c" -o "$out/peak"
"$out/peak"
for name in gemm hidden per_sample shared; do
    "${CC:-cc}" "${flags[@]}" -DSRC="\"$src\"" "$here/$name.c" -o "$out/$name" -lm
    "$out/$name"
done
