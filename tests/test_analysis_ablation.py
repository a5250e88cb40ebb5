"""Attribution points at the slots that matter: removing the top-attributed memory slots hurts
a trained toy model's prediction more than removing random ones."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from enn.analysis import metrics
from enn.models import ModelConfig, build_model
from enn.models.build import DataShape

STEPS, CLASSES, FEATURES = 4, 4, 6


@pytest.fixture
def one_thread():
    """Tiny models train far faster on one thread, above all on a shared, loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cue_batch(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The class is a cue at the first step only, hidden in noise; later steps are noise, so
    the class must be carried to the last step."""
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = 0.5 * torch.randn(n, STEPS, FEATURES, generator=g)  # (n, T, d)
    x[torch.arange(n), 0, y] += 1.0
    return x, y


def test_top_attributed_slots_matter_more_than_random_ones(one_thread):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = build_model(
        ModelConfig(hidden_sizes=(16,), memory_size=8, dropout=0.0),
        DataShape("classification", CLASSES, FEATURES),
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        x, y = cue_batch(64, g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = cue_batch(16, g)
    att = metrics.slot_attribution(model, x)
    assert (att.target == y).float().mean() > 0.6  # it learned the task
    results = [
        metrics.ablation(
            model, x[i : i + 1], att.scores[i], int(att.target[i]), k=2, draws=10, seed=i
        )
        for i in range(len(x))
    ]
    top = np.mean([r.drop_top for r in results])
    random = np.mean([r.drop_random for r in results])
    assert top > 0.005
    assert top > 3 * random
