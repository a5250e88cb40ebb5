#!/usr/bin/env bash
# The runs behind docs/results/memory.md besides the ablation (scripts/memory_ablation.sh):
#   bash scripts/memory_evidence.sh recall     # associative recall, 20 units, 50k sequences
#   bash scripts/memory_evidence.sh capacity   # MQAR: accuracy against the number of pairs
#   bash scripts/memory_evidence.sh hidden     # the hidden update on digits and MNIST
#   bash scripts/memory_evidence.sh repeats    # keys written again: the delta rule
#   bash scripts/memory_evidence.sh diversity  # letters sharing a slot: slot_diversity
#   bash scripts/memory_evidence.sh diversity-tasks  # the same term on the other tasks
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/common.sh"  # OUT, T, PAPER_CELL, RECALL_50K, UNTIL_DONE
case "${1:-}" in
  recall)
    # 20 hidden units, 50k / 5k / 10k sequences, 8 epochs; K = 4 and K = 8 side by side; the
    # preset with the residual hidden update, then the preset itself (the gated update)
    for update in residual gated; do
      suffix=$([ "$update" = gated ] && echo -gated || true)
      for k in 4 8; do
        enn compare --task assoc --models engram --preset associative --seeds 0,1,2 \
          --epochs 8 --out "$OUT/recall-k$k-h20$suffix" model.hidden_sizes=20 "data.k=$k" \
          "${RECALL_50K[@]}" "model.hidden_update=$update" "$T" &
      done
      wait_all
    done
    ;;
  capacity)
    # MQAR, 64 steps, every key queried once; the baselines sized to the parameter count of
    # the associative ENN with the residual hidden update (60,065; the preset's gate makes it
    # 72,417); up to 30 epochs with the protocol's early stopping (patience 3). Two streams
    # side by side: the ENNs, then the baselines (3 seeds each)
    (for p in 4 8 16; do
       enn compare --task mqar --models engram --preset associative --seeds 0,1,2 --epochs 30 \
         --out "$OUT/capacity-p$p" model.hidden_sizes=64 "data.pairs=$p" \
         model.hidden_update=residual "$T"
     done
     for p in 4 8 16; do
       enn compare --task mqar --models engram --preset paper --seeds 0,1,2 --epochs 30 \
         --out "$OUT/capacity-p$p-paper-cell" model.hidden_sizes=64 "data.pairs=$p" "$T"
     done
     for p in 4 8 16; do
       enn compare --task mqar --models engram --preset associative --seeds 0,1,2 --epochs 30 \
         --out "$OUT/capacity-p$p-gated" model.hidden_sizes=64 "data.pairs=$p" "$T"
     done) &
    for p in 4 8 16; do
      enn compare --task mqar --models lstm,gru --preset associative --seeds 0,1,2 \
        --match-params --epochs 30 --out "$OUT/capacity-p$p" model.hidden_sizes=64 \
        "data.pairs=$p" model.hidden_update=residual "$T"
    done
    wait_all
    ;;
  hidden)
    # the paper's cell with the per-sample trace and the default recipe ("paper memory"),
    # with each hidden update (8), (12); the default ENN (the associative memory) with the
    # paper's and the residual update (with its own, the gated one: the `default` comparisons
    # of scripts/reproduce.sh)
    for task in digits mnist10k; do
      epochs=$([ "$task" = digits ] && echo 300 || echo 15)
      for update in paper residual gated; do
        enn compare --task "$task" --models engram "${PAPER_CELL[@]}" --seeds 0,1,2 \
          --epochs "$epochs" --out "$OUT/$task-hidden-$update" "model.hidden_update=$update" "$T"
      done
      for variant in paper-update residual; do  # the folder's suffix; the update without "-update"
        enn compare --task "$task" --models engram --preset default --seeds 0,1,2 \
          --epochs "$epochs" --out "$OUT/$task-associative-$variant" \
          "model.hidden_update=${variant%-update}" "$T"
      done
    done
    for update in paper residual; do  # full MNIST
      enn compare --task mnist --models engram "${PAPER_CELL[@]}" --seeds 0,1,2 \
        --out "$OUT/mnist-hidden-$update" "model.hidden_update=$update" "$T"
    done
    ;;
  repeats)
    # keys written again (the last 2 of 4 pairs rewrite an earlier key; the target is its
    # last value): the default ENN with and without the delta rule, side by side
    REPEATS=(--epochs 8 model.hidden_sizes=20 data.k=4 data.repeats=2 "${RECALL_50K[@]}")
    for delta in false true; do
      enn compare --task assoc --models engram --preset default --seeds 0,1,2 \
        --out "$OUT/repeats-k4-delta-$delta" "model.delta_rule=$delta" "${REPEATS[@]}" "$T" &
    done
    wait_all
    ;;
  diversity)
    # the recall runs of the preset (K = 4) with the slot-diversity term at two weights,
    # side by side; then Ba et al.'s protocol (reproduce.sh assoc-100k) with the larger
    for weight in 0.01 0.1; do
      enn compare --task assoc --models engram --preset default --seeds 0,1,2 --epochs 8 \
        --out "$OUT/recall-k4-h20-diversity-$weight" model.hidden_sizes=20 data.k=4 \
        "${RECALL_50K[@]}" "model.slot_diversity=$weight" "$T" &
    done
    wait_all
    enn compare --task assoc --models engram --seeds 0,1,2 "${UNTIL_DONE[@]}" \
      --out "$OUT/assoc100k-k4-h20-diversity" model.hidden_sizes=20 model.slot_diversity=0.1 "$T"
    ;;
  diversity-tasks)
    # the default preset with the slot-diversity term (w = 0.1) on the tasks of the results
    # pages, beside their `default` comparisons (scripts/reproduce.sh a, b) and capacity-p16-gated
    W=model.slot_diversity=0.1
    enn compare --task digits --models engram --seeds 0,1,2 --epochs 300 \
      --out "$OUT/digits-diversity-0.1" "$W" "$T"
    enn compare --task mnist10k --models engram --seeds 0,1,2 \
      --out "$OUT/mnist10k-diversity-0.1" "$W" "$T"
    enn compare --task wikitext103-small --models engram --seeds 0,1,2 --epochs 3 \
      --out "$OUT/wikitext103-small-diversity-0.1" "$W" "$T"
    enn compare --task mqar --models engram --seeds 0,1,2 --epochs 30 \
      --out "$OUT/capacity-p16-diversity-0.1" model.hidden_sizes=64 data.pairs=16 "$W" "$T"
    ;;
  *) echo "usage: $0 recall|capacity|hidden|repeats|diversity|diversity-tasks" >&2; exit 2 ;;
esac
