import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_configure(config):
    # The test models are tiny: one thread is faster and immune to a busy machine's load.
    torch.set_num_threads(1)
