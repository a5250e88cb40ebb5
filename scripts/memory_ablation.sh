#!/usr/bin/env bash
# The ablation of docs/results/memory.md, on associative recall (K pairs, 20 hidden units,
# 64 slots, 50k / 5k / 10k sequences, 10 epochs): the associative preset without its clip
# (the linear memory that runs in chunks), then each ingredient removed from it or another
# added; every row at each seed of SEEDS (default 0,1,2). Every row has the residual hidden
# update but plus-gated (the preset's gate, still without the clip); plus-clip is the preset
# with the residual update.
# Each row is a folder of its seeds' runs,
# $OUT/ablation-assoc-k$K/<variant>/engram-seed<S>; the table (scripts/variant_table.py)
# gives each row's seeds, mean and difference from the first row.
# On multi-query recall (`mqar`, 8 pairs, 64 steps, 64 units, 10 epochs, seeds 0-2) the base
# is the preset with the residual update, with each ingredient removed; two runs side by side.
# An interrupted call goes on where it stopped: finished runs are kept, unfinished ones resume.
# Runs made elsewhere count as finished once their records are published
# (`python scripts/collect_results.py runs/results docs/results` puts them in
# docs/results/ablation-*/<variant>/runs/, or under $PUBLISHED): they are copied in and
# not trained again.
#   bash scripts/memory_ablation.sh [K [SEEDS]]   # K = 4 (default) or 8; SEEDS e.g. 0,1
#   bash scripts/memory_ablation.sh mqar [SEEDS]
set -euo pipefail
HERE=$(dirname "$0")
# shellcheck source=scripts/common.sh
source "$HERE/common.sh"  # OUT, T, RECALL_50K, wait_all
K=${1:-4}
SEEDS=${2:-0,1,2}
PUBLISHED=${PUBLISHED:-$HERE/../docs/results}
variant() {  # name, overrides...: one row's run at $seed, on the associative preset
  local run="$ABL/$1/engram-seed$seed" resume=(); shift
  [ -f "$run/metrics.json" ] && return
  [ -f "$run/checkpoints/last.ckpt" ] && resume=(--resume)
  enn train "${COMMON[@]}" --preset associative --out "$run" "${resume[@]}" "$@" > /dev/null
}
restore() {  # the published records of the runs this machine lacks
  local record run
  for record in "$PUBLISHED/$(basename "$ABL")"/*/runs/*-seed*; do
    [ -d "$record" ] || continue
    run="$ABL/$(basename "$(dirname "$(dirname "$record")")")/$(basename "$record")"
    [ -e "$run" ] || { mkdir -p "$(dirname "$run")"; cp -r "$record" "$run"; }
  done
}
table() {  # base: the row first, then every other row of $ABL
  local rows=("$ABL/$1")
  for dir in "$ABL"/*/; do [ "$(basename "$dir")" = "$1" ] || rows+=("${dir%/}"); done
  python3 "$HERE/variant_table.py" "${rows[@]}"
}
if [ "$K" = mqar ]; then
  ABL=$OUT/ablation-mqar-p8
  restore
  for seed in ${SEEDS//,/ }; do
    COMMON=(--task mqar --model engram --epochs 10 --seed "$seed" model.hidden_sizes=64
            data.pairs=8 model.hidden_update=residual "$T")
    (variant preset
     variant minus-previous-key model.write_key=current
     variant minus-residual model.hidden_update=paper) &
    variant minus-clip model.trace_clip=null
    variant minus-separate-decay model.trace_decay=null model.hebbian_lr=0.05
    wait_all
  done
  table preset
  exit 0
fi
ABL=$OUT/ablation-assoc-k$K
restore
for seed in ${SEEDS//,/ }; do
  COMMON=(--task assoc --model engram --epochs 10 --seed "$seed" model.hidden_sizes=20
          "data.k=$K" model.memory_size=64 model.trace_clip=null "${RECALL_50K[@]}"
          model.hidden_update=residual "$T")
  variant linear
  variant plus-clip model.trace_clip=1.0
  variant minus-previous-key model.write_key=current
  variant minus-bank-addressing model.address_trace=true
  variant minus-separate-decay model.trace_decay=null model.hebbian_lr=0.05
  variant minus-residual model.hidden_update=paper
  variant plus-128-slots model.memory_size=128
  variant temperature-0.3 model.temperature=0.3
  variant temperature-0.5 model.temperature=0.5
  variant minus-learned-sharpness model.sharpness=fixed
  variant minus-sharp-start model.temperature=1.5 model.sparsity=0.1
  variant minus-smooth-cosine model.cosine_eps=0
  variant plus-neuromodulation model.neuromodulation=true
  variant plus-mixed-key model.write_key=mix
  variant plus-gated model.hidden_update=gated
done
table linear
