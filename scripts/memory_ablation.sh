#!/usr/bin/env bash
# The ablation of docs/results/memory.md: the associative preset with each ingredient removed
# or another added, and the paper's cell with one ingredient added, on associative recall
# (K pairs, 20 hidden units, 50k / 5k / 10k sequences, 10 epochs, one seed).
#   bash scripts/memory_ablation.sh [K]        # K = 4 (default) or 8
set -euo pipefail
K=${1:-4}
OUT=${OUT:-runs/results}/ablation-assoc-k$K
COMMON=(--task assoc --model engram --epochs 10 --seed 0 model.hidden_sizes=20 "data.k=$K"
        data.n_train=50000 data.n_val=5000 data.n_test=10000 train.threads=1)
variant() {  # name, preset, overrides...
  local name=$1 preset=$2; shift 2
  [ -f "$OUT/$name/metrics.json" ] && return
  enn train "${COMMON[@]}" --preset "$preset" --out "$OUT/$name" "$@" > /dev/null
}
variant associative associative
variant minus-previous-key associative model.write_key=current
variant minus-bank-addressing associative model.address_trace=true
variant minus-separate-decay associative model.trace_decay=null model.hebbian_lr=0.05
variant minus-learned-sharpness associative model.sharpness=fixed
variant minus-sharp-start associative model.temperature=1.5 model.sparsity=0.1
variant minus-smooth-cosine associative model.cosine_eps=0
variant minus-residual associative model.hidden_update=paper
variant plus-clip associative model.trace_clip=1.0
variant plus-delta-rule associative model.delta_rule=true
variant plus-neuromodulation associative model.neuromodulation=true
variant plus-mixed-key associative model.write_key=mix
variant plus-gated associative model.hidden_update=gated
variant paper-cell default
variant paper-plus-previous-key default model.write_key=previous
variant paper-plus-residual default model.hidden_update=residual
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("| variant | test accuracy | parameters | epochs | seconds |\n|---|---|---|---|---|")
for run in sorted(out.iterdir(), key=lambda p: p.stat().st_mtime):
    m = json.loads((run / "metrics.json").read_text())
    print(f"| {run.name} | {m['test_acc']:.4f} | {m['params']} | {m['epochs_run']} | "
          f"{m['train_seconds']:.0f} |")
PY
