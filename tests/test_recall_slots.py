"""scripts/recall_slots.py: letters that read one slot, and the queries they put at risk."""

import importlib.util
from pathlib import Path

import torch

from enn.models.config import ASSOCIATIVE, resolve
from enn.nn import Engram

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "recall_slots.py"
spec = importlib.util.spec_from_file_location("recall_slots", SCRIPT)
recall_slots = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recall_slots)


def test_letters_on_one_slot_and_the_queries_with_their_partner():
    reads = torch.eye(26, 32)
    reads[[1, 4], 0] = 2.0  # b and e read slot 0 most, with a
    reads[7, 30] = 2.0  # h reads slot 30, alone
    assert recall_slots.shared_slots(reads) == {0: [0, 1, 4]}
    q = 36  # "?"
    tokens = torch.tensor([
        [1, 26, 4, 27, q, q, 1],  # b queried, e a key too: at risk
        [1, 26, 7, 27, q, q, 1],  # b queried, no partner among the keys
        [7, 26, 0, 27, q, q, 7],  # h has no partner
        [0, 26, 2, 27, q, q, 2],  # c queried; a (a partner of b, e) is not c's
        [2, 26, 0, 27, q, q, 0],  # a queried, the other key c: no partner
        [4, 26, 0, 27, q, q, 0],  # a queried, e a key too: at risk
    ])
    assert recall_slots.partner_queries(tokens, {0: [0, 1, 4]}).tolist() == [
        True, False, False, False, False, True]


def test_runs_whose_addresses_read_the_trace_are_refused():
    assert recall_slots.check_run(resolve("assoc", "engram", "default")) is None
    paper = recall_slots.check_run(resolve("assoc", "engram", "paper"))  # reads M + alpha H
    assert "address_trace=false" in paper
    assert "expected an assoc run, got task digits" in recall_slots.check_run(
        resolve("digits", "engram"))
    tokens = resolve("assoc", "engram")
    tokens.data["encoding"] = "tokens"
    assert "got data.encoding=tokens" in recall_slots.check_run(tokens)


def test_sharpness_is_the_learned_one_where_learned_else_the_fixed_one():
    paper = Engram(37, 8, memory_size=4)
    assert abs(recall_slots.sharpness(paper) - 1 / paper.hyper.effective_temperature) < 1e-9
    learned = Engram(37, 8, memory_size=4, **ASSOCIATIVE)  # starts at 1 / 0.1
    assert abs(recall_slots.sharpness(learned) - 10.0) < 1e-5
    with torch.no_grad():
        learned.log_sharpness_l0.fill_(0.0)
    assert recall_slots.sharpness(learned) == 1.0
