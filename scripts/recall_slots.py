"""Which slot each key letter reads, and which test errors that explains, for an ENN trained
on associative recall whose addresses come from the bank alone (the `default` preset): two
letters read from one slot store their values in the same place, so a query of one of them
with its partner key in the same sequence can recall the partner's value. Also prints how
sharp the letters' reads are (the top slot's share, the sharpness 1 / tau_eff).

    python scripts/recall_slots.py runs/results/assoc100k-k4-h20/engram-seed0/checkpoints/best.ckpt
"""

from __future__ import annotations

import argparse
import sys

import torch

from enn.analysis.metrics import find_engram
from enn.cli import user_errors
from enn.data.assoc import LETTERS, VOCAB_SIZE
from enn.train.explain import ExplainError, load_model
from enn.train.run import RunError


def letter_reads(model: torch.nn.Module) -> torch.Tensor:
    """(26, N): the first layer's read of each letter, alone, from an empty trace."""
    engram = find_engram(model)
    letters = torch.eye(VOCAB_SIZE)[: len(LETTERS)][:, None]  # 26 sequences of one step
    _, _, record = engram.forward_with_intermediates(
        letters if engram.batch_first else letters.transpose(0, 1))
    return record.layers[0].attention.reshape(len(LETTERS), -1)


def sharpness(model: torch.nn.Module) -> float:
    """The first layer's 1 / tau_eff in (5): learned (its mean over slots) or fixed."""
    engram = find_engram(model)
    learned = getattr(engram, "log_sharpness_l0", None)
    if learned is None:
        return 1.0 / engram.hyper.effective_temperature
    return learned.detach().exp().mean().item()


def check_run(cfg) -> str | None:
    """Why the letters' slots of this run cannot be read from the bank, or None."""
    if cfg.task != "assoc":
        return f"expected an assoc run, got task {cfg.task}"
    if cfg.data.get("encoding", "onehot") != "onehot":
        return f"expected one-hot inputs, got data.encoding={cfg.data['encoding']}"
    if cfg.model.address_trace:
        return ("expected addresses on the bank alone (model.address_trace=false): with the "
                "trace in them a letter's slot changes along the sequence")
    return None


def shared_slots(reads: torch.Tensor) -> dict[int, list[int]]:
    """The slots that two or more letters read most: slot -> its letters."""
    groups: dict[int, list[int]] = {}
    for letter, slot in enumerate(reads.argmax(-1).tolist()):
        groups.setdefault(slot, []).append(letter)
    return {slot: letters for slot, letters in groups.items() if len(letters) > 1}


def partner_queries(tokens: torch.Tensor, groups: dict[int, list[int]]) -> torch.Tensor:
    """(n,) bool: sequences (token ids, (n, 2K + 3)) whose query letter shares its slot with
    another key of the same sequence."""
    query, keys = tokens[:, -1], tokens[:, :-3:2]  # (n,), (n, K)
    hit = torch.zeros(len(tokens), dtype=torch.bool)
    for letters in groups.values():
        for letter in letters:
            partners = torch.tensor([other for other in letters if other != letter])
            hit |= (query == letter) & torch.isin(keys, partners).any(1)
    return hit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    try:
        cfg, dm, model = load_model(args.checkpoint, args.data_dir)  # its errors name the file
        problem = check_run(cfg)
        if problem:
            raise RunError(f"{args.checkpoint}: {problem}")
    except (ExplainError, RunError, *user_errors()) as err:
        print(f"recall_slots: {err}", file=sys.stderr)
        return 2
    with torch.no_grad():
        reads = letter_reads(model)
        inputs, targets = (torch.cat(t) for t in zip(*dm.test_dataloader(), strict=True))
        wrong = model(inputs).argmax(-1) != targets  # (n,)
    top = reads.max(-1).values  # (26,) the share of each letter's read on its slot
    print(f"reads: the top slot holds {top.mean():.2f} of a letter's read on average "
          f"({top.min():.2f}-{top.max():.2f}); sharpness 1 / tau_eff {sharpness(model):.1f}")
    groups = shared_slots(reads)
    for slot, letters in groups.items():
        print(f"slot {slot}: " + ", ".join(f"{LETTERS[i]} {reads[i, slot]:.2f}" for i in letters))
    hit = partner_queries(inputs.argmax(-1), groups)
    print(f"{int(wrong.sum())} of {len(wrong)} test queries wrong; {int((wrong & hit).sum())} "
          f"of them query a letter whose slot partner is a key of the same sequence "
          f"({int(hit.sum())} such queries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
