# Settings shared by the scripts behind docs/results (sourced, not run).
OUT=${OUT:-runs/results}
T="train.threads=1"  # two single-threaded runs side by side on 2 cores
# The paper's cell with the per-sample trace and the default recipe: the `paper` preset with
# its trace, initial state and Keras recipe set back to the default preset's.
PAPER_CELL=(--preset paper model.trace=per_sample model.init_state=zeros train.clip=global
  train.adam_eps=1e-8 model.head_init=torch)
# Associative recall at half the fast-weights protocol's sizes (it has 100k / 10k / 20k)
RECALL_50K=(data.n_train=50000 data.n_val=5000 data.n_test=10000)
# Train until 10 epochs bring no better validation loss, at most 300; the learning rate
# halves after 5 without
UNTIL_DONE=(--epochs 300 train.patience=10 train.lr_patience=5)

wait_all() {  # every background job; fails if one failed, where a bare `wait` returns 0
  local pid status=0
  for pid in $(jobs -p); do wait "$pid" || status=$?; done
  return "$status"
}
