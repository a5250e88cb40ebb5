import os

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors; it must be set
# before anything imports triton (torch.compile does), so here rather than in a test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def kernel_env(monkeypatch):
    """A function that sets environment variables deciding the native kernels (ENN_NATIVE,
    ENN_NATIVE_CFLAGS, CC, ENN_CACHE_DIR), with the loaded library forgotten before and after."""
    from enn.ops.engram import native

    def set_env(**env):
        for name, value in env.items():
            monkeypatch.setenv(name, str(value))
        native._library.cache_clear()

    yield set_env
    monkeypatch.undo()
    native._library.cache_clear()


def pytest_configure(config):
    # The test models are tiny: one thread is faster and immune to a busy machine's load.
    torch.set_num_threads(1)
