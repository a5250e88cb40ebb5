"""The native generator of the trace noise (csrc/normal.inc): its definition, its
distribution, its seeding from torch's generator, and its use by the layer."""

import math

import pytest
import torch
from test_native_scan import assert_same_bits_with_1_and_2_threads

from enn import Engram
from enn.ops.engram import cpu_scan, trace_noise

# the generator is native; only the last test (torch's fallback) runs without a compiler
needs_kernels = pytest.mark.skipif(not cpu_scan.available(), reason="no C compiler")
MASK64 = 2**64 - 1


def splitmix(seed: int, k: int) -> int:
    """The k-th word of SplitMix64 from ``seed``, as normal.inc documents it."""
    x = (seed + (k + 1) * 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def reference_pair(seed: int, k: int, dtype: torch.dtype) -> tuple[float, float]:
    """Pair k by the documented definition, with libm's log, cos and sin."""
    if dtype == torch.float32:
        w = splitmix(seed, k)
        u1, u2 = ((w >> 40) + 1) * 2.0**-24, ((w >> 16) & 0xFFFFFF) * 2.0**-24
    else:
        u1 = ((splitmix(seed, 2 * k) >> 11) + 1) * 2.0**-53
        u2 = (splitmix(seed, 2 * k + 1) >> 11) * 2.0**-53
    r, theta = math.sqrt(-2 * math.log(u1)), (2 * u2 - 1) * math.pi
    return r * math.cos(theta), r * math.sin(theta)


def seeded_draw(shape, dtype, seed=0):
    torch.manual_seed(seed)
    return cpu_scan.native_normal(shape, 1.0, dtype)


@needs_kernels
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float64, 1e-14)])
def test_values_follow_the_documented_definition(dtype, tol):
    n = 41  # odd: the last value is the first of pair n // 2
    out = seeded_draw((n,), dtype, seed=3)
    torch.manual_seed(3)
    seed = int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64)) % 2**64
    half = n // 2
    expected = torch.empty(n, dtype=torch.float64)
    for k in range(half):
        expected[k], expected[half + k] = reference_pair(seed, k, dtype)
    expected[n - 1] = reference_pair(seed, half, dtype)[0]
    torch.testing.assert_close(out.double(), expected, atol=tol, rtol=tol)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_are_standard_normal_and_uncorrelated(dtype):
    n = 200_001
    x = seeded_draw((n,), dtype).double()
    mean, std = x.mean().item(), x.std().item()
    assert abs(mean) < 0.01 and abs(std - 1) < 0.01
    z = (x - mean) / std
    assert abs((z**3).mean().item()) < 0.03 and abs((z**4).mean().item() - 3) < 0.06
    # Kolmogorov-Smirnov against the normal CDF (the 1% critical value is 1.63 / sqrt(n))
    xs, _ = x.sort()
    cdf = 0.5 * (1 + torch.erf(xs / math.sqrt(2)))
    ranks = torch.arange(n + 1, dtype=torch.float64) / n
    d = max((ranks[1:] - cdf).max().item(), (cdf - ranks[:-1]).max().item())
    assert d < 1.63 / math.sqrt(n)
    # the two values of a pair, and neighbours, are uncorrelated
    half = n // 2
    for a, b in ((z[:half], z[half : 2 * half]), (z[:-1], z[1:])):
        assert abs((a * b).mean().item()) < 0.01


@needs_kernels
def test_seeded_by_torch_and_independent_of_the_thread_count():
    first, again = seeded_draw((5, 7), torch.float32), seeded_draw((5, 7), torch.float32)
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    assert not torch.equal(first, seeded_draw((5, 7), torch.float32, seed=1))
    assert_same_bits_with_1_and_2_threads(lambda: (seeded_draw((1001,), torch.float32),
                                                   seeded_draw((1001,), torch.float64)))
    torch.manual_seed(0)
    scaled = cpu_scan.native_normal((5, 7), 0.001, torch.float32)
    torch.testing.assert_close(scaled, 0.001 * first)


@needs_kernels
def test_layer_draws_its_training_noise_natively_and_reproducibly(monkeypatch):
    layer = Engram(4, 8, memory_size=3, batch_first=True).train()
    x = torch.randn(2, 5, 4)
    torch.manual_seed(7)
    out, _ = layer(x)
    torch.manual_seed(7)
    again, _ = layer(x)
    torch.testing.assert_close(out, again, atol=0, rtol=0)
    # the noise is the native generator's
    drawn = {}
    real = cpu_scan.native_normal
    monkeypatch.setattr(cpu_scan, "native_normal", lambda *a: drawn.setdefault("noise", real(*a)))
    torch.manual_seed(7)
    layer(x)
    assert drawn["noise"].shape == (5, 3, 8)
    torch.manual_seed(7)
    torch.testing.assert_close(drawn["noise"], real((5, 3, 8), layer.trace_noise, torch.float32))


def test_without_the_kernels_the_noise_comes_from_torch(monkeypatch):
    monkeypatch.setattr(cpu_scan, "supports", lambda device, dtype: False)
    torch.manual_seed(2)
    noise = trace_noise((3, 4), 0.5, torch.device("cpu"), torch.float64)
    torch.manual_seed(2)
    torch.testing.assert_close(noise, 0.5 * torch.randn(3, 4, dtype=torch.float64))
