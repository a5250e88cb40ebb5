"""Numbers about an Engram's memory: trace statistics, attention, slot attribution, ablation.

The statistics are pure functions of tensors or arrays. Attribution and ablation take a model
that contains one ``Engram`` (a ``SequenceClassifier`` with an ``EngramBackbone``, or any
module holding one) and the inputs to explain.

- Slot attribution (gradient x contribution): slot i's share of the recall at step t
  is ``a_t[i] * E_t[i]`` (``E_t = M + alpha * H_{t-1}``); its attribution is
  ``sum_t a_t[i] * (E_t[i] . d logit_c / d m_t)``, with c the predicted (or given) class.
  Summed over the slots this is gradient x input of the recalls.
- Ablation removes rows of the memory bank: a copy of the Engram with ``N - k`` slots holds the
  kept rows of M (all other parameters copied), so attention renormalises over the remaining
  slots and removed slots are neither recalled nor written.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge

from ..nn import Engram
from ..ops.engram import EngramIntermediates

SPARSITY_THRESHOLD = 0.01  # the paper's "sparsity": the fraction of |H| below this

ArrayLike = Tensor | np.ndarray


def _np(values: ArrayLike) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=float)


# --- statistics ---------------------------------------------------------------------------


def trace_stats(trace: ArrayLike, threshold: float = SPARSITY_THRESHOLD) -> dict[str, float]:
    """min, max, mean |H|, std and sparsity (fraction of |H| < threshold) over every entry."""
    h = _np(trace)
    return {
        "min": float(h.min()),
        "max": float(h.max()),
        "mean_abs": float(np.abs(h).mean()),
        "std": float(h.std()),
        "sparsity": float((np.abs(h) < threshold).mean()),
    }


def attention_entropy(attention: ArrayLike) -> float:
    """Mean entropy (nats) of the attention rows (..., N); 0 = all weight on one slot."""
    a = _np(attention)
    return float(-(a * np.log(np.clip(a, 1e-12, None))).sum(-1).mean())


def effective_slots(attention: ArrayLike) -> float:
    """exp(mean entropy): 1 when one slot takes all, N when attention is uniform."""
    return float(np.exp(attention_entropy(attention)))


def slot_win_frequency(attention: ArrayLike) -> np.ndarray:
    """(N,): how often each slot has the largest weight, over all rows of (..., N)."""
    a = _np(attention)
    n = a.shape[-1]
    wins = np.bincount(a.reshape(-1, n).argmax(-1), minlength=n)  # (N,)
    return wins / wins.sum()


def attention_stats(attention: ArrayLike) -> dict[str, float]:
    """Entropy, effective slots, and the slot that wins most often with its share of wins."""
    wins = slot_win_frequency(attention)
    return {
        "attention_entropy": attention_entropy(attention),
        "effective_slots": effective_slots(attention),
        "top_slot": int(wins.argmax()),
        "top_slot_share": float(wins.max()),
    }


def class_slot_usage(attention: ArrayLike, labels: ArrayLike, num_classes: int) -> np.ndarray:
    """(C, N): mean attention per slot over all steps of the sequences of each class.

    attention (B, T, N) or (B, N), labels (B,). Classes without sequences get a row of NaN.
    """
    a = _np(attention)
    a = a.reshape(a.shape[0], -1, a.shape[-1]).mean(1)  # (B, N)
    y = _np(labels).astype(int)
    usage = np.full((num_classes, a.shape[-1]), np.nan)
    for c in range(num_classes):
        if (y == c).any():
            usage[c] = a[y == c].mean(0)
    return usage


# --- finding and recording the Engram ------------------------------------------------------


def find_engram(model: nn.Module) -> Engram | None:
    """The (first) Engram inside ``model``, or None for a baseline."""
    return next((m for m in model.modules() if isinstance(m, Engram)), None)


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[Engram]:
    """``model`` in eval mode for the block (its mode restored after); yields its Engram."""
    engram = find_engram(model)
    if engram is None:
        raise ValueError(f"{type(model).__name__} holds no Engram layer")
    was_training = model.training
    model.eval()
    try:
        yield engram
    finally:
        model.train(was_training)


@contextmanager
def recording(engram: Engram) -> Iterator[list[EngramIntermediates]]:
    """Within the block every forward of ``engram`` also records its intermediates (in the
    returned list, one per call); the model around it runs unchanged."""
    records: list[EngramIntermediates] = []

    def forward(*args, **kwargs):
        out, state, record = Engram.forward_with_intermediates(engram, *args, **kwargs)
        records.append(record)
        return out, state

    engram.forward = forward
    try:
        yield records
    finally:
        del engram.forward


@torch.no_grad()
def probe(
    model: nn.Module, x: Tensor, lengths: Tensor | None = None
) -> tuple[Tensor, EngramIntermediates]:
    """Run ``model`` in eval mode on one batch; (its output, the Engram's top-layer record)."""
    with _evaluating(model) as engram, recording(engram) as records:
        out = model(x) if lengths is None else model(x, lengths)
    return out, records[-1]


# --- attribution ---------------------------------------------------------------------------


@dataclass
class Attribution:
    """Slot attribution of a batch: scores (B, N), the explained class (B,), its probability
    (B,), the attention (B, T, N) of the explained layer, and the logits (B, C)."""

    scores: Tensor
    target: Tensor
    prob: Tensor
    attention: Tensor
    logits: Tensor


def slot_attribution(
    model: nn.Module, x: Tensor, target: Tensor | None = None, layer: int = -1
) -> Attribution:
    """How much each memory slot of ``layer`` contributed to the logit of ``target`` (default:
    the predicted class), by gradient x contribution (see the module docstring).

    ``model(x)`` must return logits (B, C). With a shared trace the samples of a batch interact;
    pass one input at a time there.
    """
    with _evaluating(model) as engram, torch.enable_grad(), recording(engram) as records:
        logits = model(x)  # (B, C)
        record = records[-1].layers[layer]
        target = logits.argmax(-1) if target is None else target.to(logits.device)  # (B,)
        chosen = logits.gather(1, target[:, None]).sum()
        steps = [GradientEdge(node, nr) for node, nr in record.recall.grad_fn.next_functions]
        grads = torch.autograd.grad(chosen, steps, allow_unused=True, materialize_grads=True)
    g = torch.stack(grads, dim=1)  # (B, T, h)
    k = range(engram.num_layers)[layer]
    memory = engram.layer_weights(k).memory.detach()  # (N, h)
    trace = record.trace.detach()  # (B, T, N, h) or (T, N, h)
    if trace.dim() == 3:
        trace = trace[None]  # (1, T, N, h): the shared trace
    previous = torch.cat([torch.zeros_like(trace[:, :1]), trace[:, :-1]], 1)  # H_{t-1}
    E = memory + engram.hyper.trace_scale * previous  # (B or 1, T, N, h)
    a = record.attention.detach()  # (B, T, N)
    scores = (a * torch.einsum("btnh,bth->btn", E.expand(a.size(0), -1, -1, -1), g)).sum(1)
    probs = torch.softmax(logits.detach(), -1)  # (B, C)
    return Attribution(
        scores=scores,  # (B, N)
        target=target.detach(),
        prob=probs.gather(1, target[:, None]).squeeze(1),
        attention=a,
        logits=logits.detach(),
    )


# --- ablation ------------------------------------------------------------------------------


def remove_slots(engram: Engram, slots: Iterable[int]) -> Engram:
    """A copy of a one-layer ``engram`` without the memory rows ``slots`` (see module doc)."""
    if engram.num_layers != 1:
        raise ValueError("slot removal needs a one-layer Engram (all layers share memory_size)")
    removed = {int(s) for s in slots}
    keep = [i for i in range(engram.memory_size) if i not in removed]
    if not keep:
        raise ValueError("cannot remove every memory slot")
    hp = engram.hyper
    memory = engram.layer_weights(0).memory
    options = {**engram.options(), "memory_size": len(keep),
               "top_k": None if hp.top_k is None else min(hp.top_k, len(keep))}
    smaller = Engram(engram.input_size, engram.hidden_size, engram.num_layers, engram.bias,
                     engram.batch_first, engram.dropout, device=memory.device,
                     dtype=memory.dtype, **options)
    index = torch.tensor(keep, device=memory.device)
    per_slot = {name for name, p in engram.named_parameters()
                if name.startswith(("memory", "log_sharpness")) and p.dim() > 0}
    state = {
        name: value.index_select(0, index) if name in per_slot else value
        for name, value in engram.state_dict().items()
    }
    smaller.load_state_dict(state)
    smaller.train(engram.training)
    return smaller


def without_slots(model: nn.Module, slots: Iterable[int]) -> nn.Module:
    """A copy of ``model`` whose Engram lacks the memory rows ``slots``."""
    engram = find_engram(model)
    if engram is None:
        raise ValueError(f"{type(model).__name__} holds no Engram layer")
    name = next(n for n, m in model.named_modules() if m is engram)
    clone = copy.deepcopy(model)
    parent_name, _, attr = name.rpartition(".")
    parent = clone.get_submodule(parent_name) if parent_name else clone
    setattr(parent, attr, remove_slots(engram, slots))
    return clone


@torch.no_grad()
def class_prob(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """(B,): the eval-mode probability of ``target`` (B,) under ``model(x)`` logits (B, C)."""
    was_training = model.training
    model.eval()
    try:
        probs = torch.softmax(model(x), -1)  # (B, C)
    finally:
        model.train(was_training)
    return probs.gather(1, target[:, None].to(probs.device)).squeeze(1)


@dataclass
class Ablation:
    """Probability of the explained class with all slots, without the k top-attributed slots,
    and without k random slots (mean and std over ``draws`` draws)."""

    k: int
    draws: int
    top_slots: list[int]
    prob: float
    prob_top: float
    prob_random: float
    prob_random_std: float

    @property
    def drop_top(self) -> float:
        return self.prob - self.prob_top

    @property
    def drop_random(self) -> float:
        return self.prob - self.prob_random

    def as_dict(self) -> dict:
        return {**asdict(self), "drop_top": self.drop_top, "drop_random": self.drop_random}


def ablation(
    model: nn.Module,
    x: Tensor,
    scores: Tensor,
    target: int,
    k: int,
    draws: int = 20,
    seed: int = 0,
) -> Ablation:
    """Remove the ``k`` slots with the largest attribution ``scores`` (N,) of the one input
    ``x`` (1, ...), then ``draws`` times ``k`` random slots; the class ``target``'s probability
    each time."""
    n = scores.numel()
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} memory slots, got {k}")
    y = torch.tensor([target])
    top = scores.topk(k).indices.tolist()
    g = torch.Generator().manual_seed(seed)
    random = [
        float(class_prob(without_slots(model, torch.randperm(n, generator=g)[:k].tolist()), x, y))
        for _ in range(draws)
    ]
    return Ablation(
        k=k,
        draws=draws,
        top_slots=top,
        prob=float(class_prob(model, x, y)),
        prob_top=float(class_prob(without_slots(model, top), x, y)),
        prob_random=float(np.mean(random)),
        prob_random_std=float(np.std(random)),
    )
