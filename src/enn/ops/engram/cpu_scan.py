"""Native CPU kernels of the Engram layer, with their hand-written backward passes.

Per-sample trace (``native_memory_scan``). One sequence's trace (N, h) is small (32 KB at
the paper's shapes), so the exact step recurrence of ``naive.py`` (steps 2-6 and 9, clip
included) runs fastest as a plain loop that keeps it in cache (``csrc/per_sample_scan.inc``),
one sample at a time, the batch split over threads. For the backward, the forward keeps the
trace before steps C, 2C, ... (``checkpoint_spacing``; the first chunk starts from the initial
trace), each step's row norms and cosines, and which chunks the clip may have acted on (an
upper bound of the trace's entries). The backward walks each chunk in reverse: where the clip
cannot have acted, from the trace the chunk ends with, undoing each step's write as it goes
(H_{t-1} = (H_t - eta (a_t z_t^T + noise_t)) / d, exact but for rounding, which a chunk of C
steps multiplies by at most 1 / d^C: 2.3 at the default eta and C = 16; where that would
exceed 8, no chunk is walked back); elsewhere it first rewrites the chunk's traces from where
it starts (the attention is known). The saved state is
(B, T / C - 1, N, h) plus a few (B, T, N) tensors.

Shared trace (``native_shared_scan``: ``shared_scan.shared_scan`` and the recall in one
kernel, ``csrc/shared_scan.inc``). One (N, h) trace for the batch, so each step runs over the
samples in blocks, with register-tiled products, then over the trace's rows, which sum over
the batch (each thread its rows, every sample in order) and prepare the next step. Every
step's trace is kept for the backward (T x N x h values: small).

Hidden pass (``native_hidden_pass``, ``csrc/hidden_scan.inc``): the step loop that follows
the memory pass. Samples are independent there, so each thread runs its own samples through
all the steps without synchronisation, with register-tiled products over X = [z ; m ; the
state each step starts from], whose parts the products read where they lie. The weights'
gradients follow in the same call, their output tiles shared out over the threads.

The kernels' results do not depend on the thread count, to the last bit. The C files are
compiled on first use with the system's C compiler (``$CC``, else ``cc``) into
``$ENN_CACHE_DIR`` (default ``~/.cache/enn``) and loaded with ctypes. The kernels split their
work over OpenMP threads, and since the library links ``libgomp.so.1``, which torch has
already loaded, those are torch's own threads (``torch.get_num_threads()`` of them): a
second thread pool would fight torch's spinning workers for the cores. Where no compiler
works, a warning says so and the layer keeps its PyTorch path (``fast.py``). ``ENN_NATIVE=0``
turns the kernels off.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import subprocess
import tempfile
import warnings
from functools import cache
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .common import EngramHyper

_CSRC = Path(__file__).with_name("csrc")
_MAIN_SOURCE = _CSRC / "engram_kernels.c"  # it includes every .inc file beside it
_FLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=fast", "-std=c11", "-shared", "-fPIC"]
# tried in order: some compilers lack -march=native or OpenMP (then the kernel runs on one core)
_VARIANTS = [["-march=native", "-fopenmp"], ["-fopenmp"], ["-fopenmp-simd"]]
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
MIN_CHUNK = 16  # checkpoint spacing; sqrt(T) beyond 256 steps keeps the saved state small


def _cpu_signature() -> str:
    """What -march=native depends on, so that a cache shared between machines stays safe."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith(("flags", "Features")))
    except (OSError, StopIteration):
        flags = ""
    return f"{platform.machine()} {flags}"


def _compile(out: Path) -> str | None:
    """Build the library at ``out`` (atomically); None on success, else the compiler's words."""
    cc = os.environ.get("CC", "cc")
    errors = []
    for variant in _VARIANTS:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        cmd = [cc, *variant, *_FLAGS, "-o", tmp, str(_MAIN_SOURCE)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as err:
            proc = None
            errors.append(f"{' '.join(cmd)}: {err}")
        if proc is not None and proc.returncode == 0:
            os.replace(tmp, out)
            return None
        if proc is not None:
            errors.append(f"{' '.join(cmd)}: {proc.stderr.strip()[-500:]}")
        Path(tmp).unlink(missing_ok=True)
    return "\n".join(errors)


def _library_path() -> Path:
    """Where the built library is cached: keyed by every source file (so that no edit can
    leave a stale library), the flags, the compiler and the CPU."""
    key = hashlib.sha256()
    sources = sorted([*_CSRC.glob("*.c"), *_CSRC.glob("*.inc")])
    for part in (*(f.name.encode() + f.read_bytes() for f in sources),
                 repr((_FLAGS, _VARIANTS)).encode(), os.environ.get("CC", "cc").encode(),
                 _cpu_signature().encode()):
        key.update(part)
    cache_dir = Path(os.environ.get("ENN_CACHE_DIR", Path.home() / ".cache" / "enn"))
    return cache_dir / "kernels" / f"engram_kernels-{key.hexdigest()[:16]}.so"


@cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get("ENN_NATIVE", "1") == "0":
        return None
    path = _library_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        error = None if path.exists() else _compile(path)
    except OSError as err:
        error = str(err)
    if error is None:
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as err:
            error = str(err)
    if error is not None:
        warnings.warn(f"enn: the native kernels could not be built, so the slower "
                      f"PyTorch path runs instead (ENN_NATIVE=0 silences this):\n{error}",
                      RuntimeWarning, stacklevel=3)
        return None
    p, i64, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    for sfx in _SUFFIX.values():
        fwd = getattr(lib, f"enn_scan_forward_{sfx}")
        fwd.argtypes = [p] * 5 + [i64] * 4 + [f64] * 4 + [i64] + [p] * 8 + [i64] * 2
        bwd = getattr(lib, f"enn_scan_backward_{sfx}")
        bwd.argtypes = [p] * 15 + [i64] * 4 + [f64] * 4 + [p] * 3 + [i64] * 2
        shared_fwd = getattr(lib, f"enn_shared_forward_{sfx}")
        shared_fwd.argtypes = [p] * 6 + [i64] * 4 + [f64] * 4 + [i64] + [p] * 8 + [i64]
        shared_bwd = getattr(lib, f"enn_shared_backward_{sfx}")
        shared_bwd.argtypes = [p] * 12 + [i64] * 4 + [f64] * 4 + [p] * 3 + [i64]
        hidden_fwd = getattr(lib, f"enn_hidden_forward_{sfx}")
        hidden_fwd.argtypes = [p] * 10 + [f64] + [p] + [i64] * 3 + [p] * 6 + [i64]
        hidden_bwd = getattr(lib, f"enn_hidden_backward_{sfx}")
        hidden_bwd.argtypes = [p] * 13 + [i64] * 3 + [p] * 8 + [i64]
        for fn in (fwd, bwd, shared_fwd, shared_bwd, hidden_fwd, hidden_bwd):
            fn.restype = ctypes.c_int
        normal = getattr(lib, f"enn_normal_{sfx}")
        normal.argtypes = [p, i64, f64, ctypes.c_uint64, i64]
        normal.restype = None
    return lib


def available() -> bool:
    """Whether the native kernels are built (building them on the first call)."""
    return _library() is not None


def supports(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the kernels can run on tensors of this device and dtype."""
    return device.type == "cpu" and dtype in _SUFFIX and available()


def usable(z: Tensor) -> bool:
    """Whether the kernels can run the memory pass of encodings ``z``."""
    return supports(z.device, z.dtype)


def _require_usable(z: Tensor, kernel: str) -> None:
    if not usable(z):
        raise RuntimeError(f"enn: the native {kernel} kernel needs float32 or float64 CPU "
                           f"tensors and a working C compiler; got {z.dtype} on {z.device}")


def _check(code: int) -> None:
    if code:
        raise MemoryError("enn: a native kernel could not allocate its buffers")


def _dense(*grads: Tensor | None) -> tuple[Tensor | None, ...]:
    """Output gradients as contiguous tensors (autograd may hand over broadcast views). The
    caller must keep the results bound to names while the C code reads them."""
    return tuple(None if g is None else g.contiguous() for g in grads)


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _step_constants(hyper: EngramHyper) -> list[float]:
    """alpha, eta, the clip and 1 / tau_eff: the memory kernels' constants, in their order."""
    return [hyper.trace_scale, hyper.hebbian_lr, hyper.trace_clip,
            1.0 / hyper.effective_temperature]


def checkpoint_spacing(T: int) -> int:
    """Steps between saved traces: MIN_CHUNK, or ceil(sqrt(T)) for long sequences."""
    return MIN_CHUNK if T <= MIN_CHUNK**2 else math.isqrt(T - 1) + 1


class _NativeScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, M, H0, noise, lengths, hyper: EngramHyper, keep: bool):
        ctx.set_materialize_grads(False)  # unused outputs: NULL, not a zero-filled buffer
        B, T, h = z.shape
        N = M.shape[0]
        C = checkpoint_spacing(T)
        lib, sfx = _library(), _SUFFIX[z.dtype]
        # the kernel writes every active step; padded ones (lengths given) must read zero
        fill = z.new_zeros if lengths is not None else z.new_empty
        A = fill(B, T, N)  # (B, T, N)
        m = fill(B, T, h)  # (B, T, h)
        H = z.new_empty(B, N, h)  # (B, N, h)
        # for the backward: the trace before steps C, 2C, ..., whether the clip may have
        # acted during each chunk, row norms, cosines, norms of z
        n_chunks = -(-T // C)
        ckpt = z.new_empty(B, n_chunks - 1, N, h) if keep else None  # (B, T / C - 1, N, h)
        clipped = torch.zeros(B, n_chunks, dtype=torch.uint8) if keep else None
        R, S = (z.new_empty(B, T, N) if keep else None for _ in range(2))  # (B, T, N)
        NZ = z.new_empty(B, T) if keep else None  # (B, T)  all read at active steps only
        consts = _step_constants(hyper)
        _check(getattr(lib, f"enn_scan_forward_{sfx}")(
            *map(_ptr, (z, M, H0, noise, lengths)), T, N, h, C, *consts, hyper.top_k or 0,
            *map(_ptr, (A, m, H, ckpt, clipped, R, S, NZ)), B, torch.get_num_threads()))
        if keep:
            # the final trace too: where the clip never acted, the backward undoes the writes
            # from the trace each chunk ends with
            ctx.save_for_backward(z, M, H0, noise, lengths, H, ckpt, clipped, A, R, S, NZ)
            ctx.consts, ctx.C = consts, C
        return A, m, H

    @staticmethod
    @once_differentiable
    def backward(ctx, gA, gm, gH):
        z, M, H0, noise, lengths, HT, ckpt, clipped, A, R, S, NZ = ctx.saved_tensors
        B, T, h = z.shape
        N = M.shape[0]
        # the kernel writes every active step's gradient; padded ones must read zero
        gz = torch.zeros_like(z) if lengths is not None else torch.empty_like(z)  # (B, T, h)
        gH0 = z.new_empty(B, N, h) if ctx.needs_input_grad[2] else None  # (B, N, h)
        gM = z.new_zeros(N, h)  # (N, h)
        gm = z.new_zeros(B, T, h) if gm is None else gm
        gA, gm, gH = _dense(gA, gm, gH)
        _check(getattr(_library(), f"enn_scan_backward_{_SUFFIX[z.dtype]}")(
            *map(_ptr, (z, M, H0, noise, lengths, HT, ckpt, clipped, A, R, S, NZ, gA, gm, gH)),
            T, N, h, ctx.C,
            *ctx.consts, *map(_ptr, (gz, gM, gH0)), B, torch.get_num_threads()))
        return gz, gM, gH0, None, None, None, None


def native_memory_scan(
    z: Tensor, M: Tensor, H0: Tensor | None, noise: Tensor | None, lengths: Tensor | None,
    hyper: EngramHyper,
) -> tuple[Tensor, Tensor, Tensor]:
    """The per-sample memory pass on the CPU, exactly (clip included): attention (B, T, N),
    recall (B, T, h) and final trace (B, N, h) from encodings z (B, T, h), the bank M (N, h),
    the initial trace H0 (B, N, h) or None for zeros, the trace noise (T, N, h) or None, and
    lengths (B,) or None. Padded steps get zero attention and recall and leave the trace."""
    _require_usable(z, "per-sample")
    dtype = z.dtype
    M = M.to(dtype).contiguous()
    H0 = None if H0 is None else H0.to(dtype).contiguous()
    noise = None if noise is None else noise.to(dtype).contiguous()
    lengths = None if lengths is None else lengths.to(torch.int64).clamp(0, z.shape[1]).contiguous()
    keep = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (z, M, H0))
    return _NativeScan.apply(z.contiguous(), M, H0, noise, lengths, hyper, keep)


class _NativeSharedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, M, H0, noise, mask, n_active, hyper: EngramHyper):
        ctx.set_materialize_grads(False)  # unused outputs: NULL, not a zero-filled buffer
        B, T, h = z.shape
        N = M.shape[0]
        A = z.new_empty(B, T, N)  # (B, T, N)
        m = z.new_empty(B, T, h)  # (B, T, h)
        H = z.new_empty(N, h)  # (N, h)
        # for the backward: E, the same transposed and the trace before its clip at every
        # step, the norms of E and z
        Es, P = z.new_empty(T, N, h), z.new_empty(T, N, h)  # (T, N, h)
        ETs = z.new_empty(T, h, N)  # (T, h, N)
        R, NZ = z.new_empty(T, N), z.new_empty(B, T)
        consts = _step_constants(hyper)
        _check(getattr(_library(), f"enn_shared_forward_{_SUFFIX[z.dtype]}")(
            *map(_ptr, (z, M, H0, noise, mask, n_active)), B, T, N, h, *consts,
            hyper.top_k or 0, *map(_ptr, (A, m, H, Es, ETs, P, R, NZ)),
            torch.get_num_threads()))
        ctx.save_for_backward(z, mask, n_active, A, Es, ETs, P, R, NZ)
        ctx.consts = consts
        return A, m, H

    @staticmethod
    @once_differentiable
    def backward(ctx, dA, dm, dH):
        z, mask, n_active, A, Es, ETs, P, R, NZ = ctx.saved_tensors
        B, T, h = z.shape
        N = Es.shape[1]
        dz = torch.empty_like(z)  # (B, T, h) every step written
        dM, dH0 = z.new_empty(N, h), z.new_empty(N, h)  # (N, h)
        dA, dm, dH = _dense(dA, dm, dH)
        _check(getattr(_library(), f"enn_shared_backward_{_SUFFIX[z.dtype]}")(
            *map(_ptr, (z, mask, n_active, A, Es, ETs, P, R, NZ, dA, dm, dH)), B, T, N, h,
            *ctx.consts, *map(_ptr, (dz, dM, dH0)), torch.get_num_threads()))
        return dz, dM, dH0, None, None, None, None


def native_shared_scan(
    z: Tensor, M: Tensor, H0: Tensor, noise: Tensor | None, mask: Tensor | None,
    n_active: list[int], hyper: EngramHyper,
) -> tuple[Tensor, Tensor, Tensor]:
    """The shared-trace memory pass on the CPU (``shared_scan`` and the recall of
    ``fast._memory_shared`` in one kernel): attention (B, T, N), recall (B, T, h) and final
    trace (N, h) from encodings z (B, T, h), the bank M (N, h), the initial trace H0 (N, h),
    the noise (T, N, h) or None, and the mask (B, T) of real steps with its counts per step
    (each >= 1: the caller drops the steps no sample reaches)."""
    _require_usable(z, "shared-trace")
    if z.shape[0] == 0:
        raise ValueError("enn: the shared trace needs a non-empty batch, got batch size 0")
    dtype = z.dtype
    mask = None if mask is None else mask.to(torch.uint8).contiguous()
    counts = torch.tensor(n_active, dtype=torch.int64)
    noise = None if noise is None else noise.to(dtype).contiguous()
    return _NativeSharedScan.apply(z.contiguous(), M.to(dtype).contiguous(),
                                   H0.to(dtype).contiguous(), noise, mask, counts, hyper)


class _NativeHidden(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, m, h0, w_c, b_c, w_o, b_o, ln_w, ln_b, eps, mask):
        ctx.set_materialize_grads(False)  # unused outputs: NULL, not a zero-filled buffer
        B, T, h = z.shape
        h3 = 3 * h
        S = z.new_empty(B, T, h)  # (B, T, h) the state each step starts from
        out = z.new_empty(B, T, h)  # (B, T, h)
        hT = z.new_empty(B, h)  # (B, h)
        C, U = z.new_empty(B, T, h3), z.new_empty(B, T, h)  # c and u after their ReLU
        MU, RS = z.new_empty(B, T), z.new_empty(B, T)  # the LayerNorm's statistics
        w_c, w_o = w_c.contiguous(), w_o.contiguous()  # (3h, 3h), (h, 3h); also for the backward
        _check(getattr(_library(), f"enn_hidden_forward_{_SUFFIX[z.dtype]}")(
            *map(_ptr, (z, m, S, h0, w_c, w_o, b_c, b_o, ln_w, ln_b)), eps, _ptr(mask), B, T, h,
            *map(_ptr, (out, hT, C, U, MU, RS)), torch.get_num_threads()))
        ctx.save_for_backward(w_c, w_o, ln_w, mask, z, m, S, C, U, MU, RS)
        ctx.has_bias = b_c is not None, b_o is not None
        return out, hT

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out, g_hT):
        w_c, w_o, ln_w, mask, z, m, S, C, U, MU, RS = ctx.saved_tensors
        B, T, h3 = C.shape
        h = h3 // 3
        # G_pre and G_u (the gradients before the ReLUs) are the kernel's working buffers,
        # from which it sums the weights' gradients
        G_pre, G_u = C.new_empty(B, T, h3), C.new_empty(B, T, h)
        g_z, g_m = C.new_empty(B, T, h), C.new_empty(B, T, h)
        g_h0 = C.new_empty(B, h)
        g_vec = C.new_empty(6 * h)  # the gradients of ln_w, ln_b, b_o and b_c
        g_out, g_hT = _dense(g_out, g_hT)
        g_w_c, g_w_o = C.new_empty(h3, h3), C.new_empty(h, h3)
        _check(getattr(_library(), f"enn_hidden_backward_{_SUFFIX[C.dtype]}")(
            *map(_ptr, (g_out, g_hT, w_c, w_o, ln_w, mask, z, m, S, C, U, MU, RS)), B, T, h,
            *map(_ptr, (G_pre, g_z, g_m, G_u, g_h0, g_w_c, g_w_o, g_vec)),
            torch.get_num_threads()))
        g_lnw, g_lnb, g_b_o, g_b_c = g_vec.split([h, h, h, h3])
        has_b_c, has_b_o = ctx.has_bias
        return (g_z, g_m, g_h0, g_w_c, g_b_c if has_b_c else None, g_w_o,
                g_b_o if has_b_o else None, g_lnw, g_lnb, None, None)


def native_normal(shape: tuple[int, ...], std: float, dtype: torch.dtype) -> Tensor:
    """``std * torch.randn(shape)`` from the kernels' counter-based generator
    (``csrc/normal.inc``), several times faster than torch's CPU generator. Its seed is drawn
    from torch's default generator, so ``torch.manual_seed`` fixes the values (and the
    draw moves that generator on by one value)."""
    out = torch.empty(shape, dtype=dtype)
    _require_usable(out, "normal-generator")
    seed = int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64)) % 2**64
    getattr(_library(), f"enn_normal_{_SUFFIX[dtype]}")(out.data_ptr(), out.numel(), std, seed,
                                                       torch.get_num_threads())
    return out


def native_hidden_pass(z: Tensor, m: Tensor, h0: Tensor, w_c: Tensor, b_c: Tensor | None,
                       w_o: Tensor, b_o: Tensor | None, ln_w: Tensor, ln_b: Tensor, eps: float,
                       mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """``fast._hidden_pass`` on the CPU: from encodings z and recalls m (B, T, h) and the
    state h0 (B, h), the outputs (B, T, h) (zeros at padded steps) and the last state
    (B, h). ``mask`` (B, T) marks real steps; the biases may be None."""
    _require_usable(z, "hidden-pass")
    dtype = z.dtype
    mask = None if mask is None else mask.to(torch.uint8).contiguous()
    # the kernel reads z and m row by row as (B, T, h) blocks
    return _NativeHidden.apply(z.contiguous(), m.to(dtype).contiguous(),
                               h0.to(dtype).contiguous(), w_c, b_c, w_o, b_o, ln_w, ln_b, eps,
                               mask)
