#!/usr/bin/env bash
# The runs behind docs/results/memory.md besides the ablation (scripts/memory_ablation.sh):
#   bash scripts/memory_evidence.sh recall     # associative recall, Ba et al.'s protocol
#   bash scripts/memory_evidence.sh capacity   # MQAR: accuracy against the number of pairs
set -euo pipefail
OUT=${OUT:-runs/results}
T="train.threads=1"
case "${1:-}" in
  recall)
    # 100k / 10k / 20k sequences (the data defaults), 20 hidden units, 10 epochs
    for k in 4 8; do
      enn compare --task assoc --models engram --preset associative --seeds 0,1,2 \
        --epochs 10 --out "$OUT/recall-k$k-h20" model.hidden_sizes=20 "data.k=$k" "$T"
    done
    ;;
  capacity)
    # 64 steps, every key queried once; the baselines sized to the ENN's parameter count
    for p in 4 12 20; do
      enn compare --task mqar --models engram,lstm,gru --preset associative --seeds 0 \
        --match-params --epochs 5 --out "$OUT/capacity-p$p" model.hidden_sizes=64 \
        "data.pairs=$p" "$T"
      enn compare --task mqar --models engram --preset default --seeds 0 --epochs 5 \
        --out "$OUT/capacity-p$p-paper-cell" model.hidden_sizes=64 "data.pairs=$p" "$T"
    done
    ;;
  *) echo "usage: $0 recall|capacity" >&2; exit 2 ;;
esac
