"""The native CPU backend: C kernels registered as PyTorch operators (``torch.ops.enn``).

Four passes, each an operator with a fake (shape) implementation and a hand-written
backward, so that ``torch.compile(fullgraph=True)`` traces a layer that uses them:

- ``enn::per_sample_memory``: the memory (eqs. 2-6, 9) with one trace per sequence
  (``csrc/per_sample_scan.inc``). A sequence's trace (32 KB at the paper's shapes) stays in
  cache while the loop walks its steps, one sequence per thread at a time. The forward keeps
  the trace every ``checkpoint_spacing(T)`` steps and marks the chunks where the clip may
  have acted; the backward walks each chunk in reverse, undoing the writes where no clip
  acted (exact but for rounding) and rewriting the chunk from its checkpoint elsewhere.
- ``enn::shared_memory``: the memory with one trace for the batch (``csrc/shared_scan.inc``):
  each step runs over blocks of samples, then over the trace's rows, which sum the write
  over the batch in a fixed order.
- ``enn::clipped_memory``: the per-sample trace of a memory whose addresses do not read it,
  with the clip (``csrc/clipped_trace.inc``): given the cosines of every step's query (and
  key) with the bank, it forms the addresses (sharpened softmax, top-k, the write key's
  address and mix, the write strength) and walks the writes and the reads, one sequence per
  thread, in blocks of columns whose values and sums stay in registers (AVX-512 for
  float32); the backward rewrites each chunk from its checkpoint (in place, keeping the
  clip's pass masks, where one decay serves every step) and takes the gradients back to
  the cosines, the sharpness and the mix.
- ``enn::hidden_pass``: the hidden chain (eqs. 7-8, and each update of 12) given the
  recalls (``csrc/hidden_scan.inc``); samples are independent, so each thread runs its own
  through every step with no synchronisation, and the weights' gradients are register-tiled
  products in the same call. The inputs' share of the integrator, W_c [z ; m], and its
  gradient are two large PyTorch products around the kernel, since no step waits on them.

Results do not depend on the thread count, to the last bit (tests hold them to it). Every
operator checks its arguments' devices, dtypes and shapes and makes them contiguous. The
library is compiled on first use with the system's C compiler (``$CC``, else ``cc``; extra
flags from ``$ENN_NATIVE_CFLAGS``) into ``$ENN_CACHE_DIR`` (default ``~/.cache/enn``);
where that fails, a warning says so and the layer runs the PyTorch path. ``ENN_NATIVE=0``
turns the backend off. It links the OpenMP runtime torch has loaded, so its threads are torch's.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import warnings
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import HIDDEN_UPDATES

_CSRC = Path(__file__).with_name("csrc")
_MAIN_SOURCE = _CSRC / "engram_kernels.c"  # it includes every .inc file beside it
_FLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=fast", "-std=c11", "-shared", "-fPIC"]
# tried in order: some compilers lack -march=native or OpenMP (then the kernels run on one core)
_VARIANTS = [["-march=native", "-fopenmp"], ["-fopenmp"], ["-fopenmp-simd"]]
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
MIN_CHUNK = 16  # checkpoint spacing; sqrt(T) beyond 256 steps keeps the saved state small
_EMPTY = (0,)  # the shape of a saved tensor that is not needed


def setting() -> bool:
    """Whether ``ENN_NATIVE`` allows the backend: unset, empty or 1 (yes), 0 (no)."""
    value = os.environ.get("ENN_NATIVE", "")
    if value not in ("", "0", "1"):
        raise ValueError(f"ENN_NATIVE must be 0 or 1, got {value!r}")
    return value != "0"


def _extra_flags() -> list[str]:
    return shlex.split(os.environ.get("ENN_NATIVE_CFLAGS", ""))


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
    print("enn: compiling the native CPU kernels (once; a few seconds)", file=sys.stderr)
    for variant in _VARIANTS:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        cmd = [cc, *variant, *_FLAGS, *_extra_flags(), "-o", tmp, str(_MAIN_SOURCE)]
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
                 repr((_FLAGS, _VARIANTS, _extra_flags())).encode(),
                 os.environ.get("CC", "cc").encode(), _cpu_signature().encode()):
        key.update(part)
    cache_dir = Path(os.environ.get("ENN_CACHE_DIR", Path.home() / ".cache" / "enn"))
    return cache_dir / "kernels" / f"engram_kernels-{key.hexdigest()[:16]}.so"


@cache
def _library() -> ctypes.CDLL | None:
    if not setting():
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
    argtypes = {
        "enn_scan_forward": [p] * 5 + [i64] * 4 + [f64] * 6 + [i64] + [p] * 8 + [i64] * 2,
        "enn_scan_backward": [p] * 15 + [i64] * 4 + [f64] * 6 + [p] * 3 + [i64] * 2,
        "enn_shared_forward": [p] * 6 + [i64] * 4 + [f64] * 6 + [i64] + [p] * 8 + [i64],
        "enn_shared_backward": [p] * 12 + [i64] * 4 + [f64] * 6 + [p] * 3 + [i64],
        "enn_hidden_forward": [p] * 9 + [f64, i64, p] + [i64] * 3 + [p] * 6 + [i64],
        "enn_hidden_backward": [p] * 5 + [i64] + [p] * 8 + [i64] * 3 + [p] * 6 + [i64],
        "enn_clipped_forward": [p] * 9 + [i64] * 7 + [f64] * 4 + [p] * 5 + [i64] * 2,
        "enn_clipped_backward": [p] * 9 + [i64] * 7 + [f64] * 4 + [p] * 14 + [i64] * 2,
    }
    for name, types in argtypes.items():
        for sfx in _SUFFIX.values():
            fn = getattr(lib, f"{name}_{sfx}")
            fn.argtypes, fn.restype = types, ctypes.c_int
    return lib


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the native kernels are built (building them on the first call)."""
    return _library() is not None


def supports(t: Tensor) -> bool:
    """Whether the kernels can run on tensors like ``t`` (float32/64 on the CPU)."""
    return t.device.type == "cpu" and t.dtype in _SUFFIX and available()


def _call(name: str, dtype: torch.dtype, *args) -> None:
    lib = _library()
    if lib is None:
        raise RuntimeError("enn: the native kernels are not available (ENN_NATIVE=0, or no "
                           "working C compiler)")
    ptrs = [a.data_ptr() if isinstance(a, Tensor) else a for a in args]
    if getattr(lib, f"{name}_{_SUFFIX[dtype]}")(*ptrs, torch.get_num_threads()):
        raise MemoryError(f"enn: the native kernel {name} could not allocate its buffers")


def _arg(name: str, t: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype
         ) -> Tensor | None:
    """``t`` checked (CPU, dtype, shape) and contiguous, so that the C code reads it right."""
    if t is None:
        return None
    if t.device.type != "cpu":
        raise ValueError(f"enn: expected {name} on the CPU, got {t.device}")
    if t.dtype != dtype:
        raise TypeError(f"enn: expected {name} of dtype {dtype}, got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"enn: expected {name} of shape {shape}, got {tuple(t.shape)}")
    return t.contiguous()


def _check_z(z: Tensor) -> None:
    if z.device.type != "cpu" or z.dtype not in _SUFFIX or z.dim() != 3:
        raise TypeError(f"enn: the native kernels need a (B, T, h) float32 or float64 CPU "
                        f"tensor, got {tuple(z.shape)} {z.dtype} on {z.device}")


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(_EMPTY)


def checkpoint_spacing(T: int) -> int:
    """Steps between saved traces: MIN_CHUNK, or ceil(sqrt(T)) for long sequences."""
    return MIN_CHUNK if T <= MIN_CHUNK**2 else math.isqrt(T - 1) + 1


# --- per-sample memory --------------------------------------------------------------------

def _per_sample_shapes(z: Tensor, M: Tensor, save: bool):
    B, T, h = z.shape
    N = M.shape[0]
    n_chunks = -(-T // checkpoint_spacing(T))
    saved = (B, n_chunks - 1, N, h), (B, n_chunks), (B, T, N), (B, T, N), (B, T)
    return (B, T, N), (B, T, h), (B, N, h), [s if save else _EMPTY for s in saved]


@torch.library.custom_op("enn::per_sample_memory", mutates_args=())
def per_sample_memory(
    z: Tensor, M: Tensor, H0: Tensor | None, noise: Tensor | None, lengths: Tensor | None,
    trace_scale: float, decay: float, strength: float, trace_clip: float,
    inv_temperature: float, cosine_eps: float, top_k: int, save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Attention (B, T, N), recall (B, T, h) and final trace (B, N, h) from encodings z
    (B, T, h), the bank M (N, h), the initial trace (B, N, h) or None (zeros), the noise
    (T, N, h) or None and lengths (B,) or None; then what the backward needs (``save``)."""
    _check_z(z)
    B, T, h = z.shape
    N = M.shape[0] if M.dim() == 2 else -1
    dt = z.dtype
    z, M = z.contiguous(), _arg("memory", M, (N, h), dt)
    H0, noise = _arg("initial trace", H0, (B, N, h), dt), _arg("noise", noise, (T, N, h), dt)
    if lengths is not None:
        lengths = _arg("lengths", lengths.to(torch.int64), (B,), torch.int64).clamp(0, T)
    shape_a, shape_m, shape_H, saved = _per_sample_shapes(z, M, save)
    # padded steps are not written by the kernel and must read zero
    fill = z.new_zeros if lengths is not None else z.new_empty
    A, m, H = fill(shape_a), fill(shape_m), z.new_empty(shape_H)
    ckpt, R, S, NZ = (z.new_empty(s) for s in (saved[0], *saved[2:]))
    clipped = torch.zeros(saved[1], dtype=torch.uint8)
    use = (lambda t: t) if save else (lambda t: None)
    _call("enn_scan_forward", dt, z, M, H0, noise, lengths, T, N, h, checkpoint_spacing(T),
          trace_scale, decay, strength, trace_clip, inv_temperature, cosine_eps, top_k,
          A, m, H, use(ckpt), use(clipped), use(R), use(S), use(NZ), B)
    return A, m, H, ckpt, clipped, R, S, NZ


@per_sample_memory.register_fake
def _(z, M, H0, noise, lengths, trace_scale, decay, strength, trace_clip, inv_temperature,
      cosine_eps, top_k, save):
    shape_a, shape_m, shape_H, saved = _per_sample_shapes(z, M, save)
    out = [z.new_empty(s) for s in (shape_a, shape_m, shape_H, *saved)]
    out[4] = out[4].to(torch.uint8)
    return tuple(out)


@torch.library.custom_op("enn::per_sample_memory_backward", mutates_args=())
def per_sample_memory_backward(
    z: Tensor, M: Tensor, H0: Tensor | None, noise: Tensor | None, lengths: Tensor | None,
    HT: Tensor, ckpt: Tensor, clipped: Tensor, A: Tensor, R: Tensor, S: Tensor, NZ: Tensor,
    gA: Tensor | None, gm: Tensor | None, gH: Tensor | None, trace_scale: float, decay: float,
    strength: float, trace_clip: float, inv_temperature: float, cosine_eps: float,
    want_gH0: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    B, T, h = z.shape
    N = M.shape[0]
    gz = torch.zeros_like(z) if lengths is not None else torch.empty_like(z)
    gM = z.new_zeros(N, h)
    gH0 = z.new_empty(B, N, h) if want_gH0 else _empty(z)
    gm = z.new_zeros(B, T, h) if gm is None else gm.contiguous()
    gA = None if gA is None else gA.contiguous()
    gH = None if gH is None else gH.contiguous()
    if lengths is not None:
        lengths = lengths.to(torch.int64).clamp(0, T).contiguous()
    _call("enn_scan_backward", z.dtype, z, M.contiguous(),
          None if H0 is None else H0.contiguous(), None if noise is None else noise.contiguous(),
          lengths, HT, ckpt, clipped, A, R, S, NZ, gA, gm, gH, T, N, h, checkpoint_spacing(T),
          trace_scale, decay, strength, trace_clip, inv_temperature, cosine_eps, gz, gM,
          gH0 if want_gH0 else None, B)
    return gz, gM, gH0


@per_sample_memory_backward.register_fake
def _(z, M, H0, noise, lengths, HT, ckpt, clipped, A, R, S, NZ, gA, gm, gH, trace_scale, decay,
      strength, trace_clip, inv_temperature, cosine_eps, want_gH0):
    B, T, h = z.shape
    N = M.shape[0]
    return torch.empty_like(z), z.new_empty(N, h), z.new_empty((B, N, h) if want_gH0 else _EMPTY)


def _per_sample_setup(ctx, inputs, output):
    z, M, H0, noise, lengths, *consts, _top_k, _save = inputs
    A, _m, H, ckpt, clipped, R, S, NZ = output
    ctx.save_for_backward(z, M, H0, noise, lengths, H, ckpt, clipped, A, R, S, NZ)
    ctx.consts = consts
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(ckpt, clipped, R, S, NZ)


def _per_sample_backward(ctx, gA, gm, gH, *_):
    z, M, H0, noise, lengths, H, ckpt, clipped, A, R, S, NZ = ctx.saved_tensors
    if R.numel() == 0:
        raise RuntimeError("enn: this per-sample memory pass ran without saving for the "
                           "backward (save=False)")
    want_gH0 = H0 is not None and ctx.needs_input_grad[2]
    gz, gM, gH0 = torch.ops.enn.per_sample_memory_backward(
        z, M, H0, noise, lengths, H, ckpt, clipped, A, R, S, NZ, gA, gm, gH, *ctx.consts,
        want_gH0)
    return (gz, gM, gH0 if want_gH0 else None) + (None,) * 10


per_sample_memory.register_autograd(_per_sample_backward, setup_context=_per_sample_setup)


# --- shared memory ------------------------------------------------------------------------

def _shared_shapes(z: Tensor, M: Tensor):
    B, T, h = z.shape
    N = M.shape[0]
    return (B, T, N), (B, T, h), (N, h), [(T, N, h), (T, h, N), (T, N, h), (T, N), (B, T)]


@torch.library.custom_op("enn::shared_memory", mutates_args=())
def shared_memory(
    z: Tensor, M: Tensor, H0: Tensor, noise: Tensor | None, lengths: Tensor | None,
    trace_scale: float, decay: float, strength: float, trace_clip: float,
    inv_temperature: float, cosine_eps: float, top_k: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Attention (B, T, N), recall (B, T, h) and final trace (N, h) of the shared trace,
    then what the backward needs. Steps that no sample reaches are left out."""
    _check_z(z)
    B, T, h = z.shape
    N = M.shape[0] if M.dim() == 2 else -1
    dt = z.dtype
    if B == 0:
        raise ValueError("enn: the shared trace needs a non-empty batch, got batch size 0")
    M, H0 = _arg("memory", M, (N, h), dt), _arg("initial trace", H0, (N, h), dt)
    noise = _arg("noise", noise, (T, N, h), dt)
    mask, counts, steps = _active_steps(lengths, B, T)
    saved = _shared_shapes(z[:, :steps], M)[3]
    A, m, H = z.new_empty(B, steps, N), z.new_empty(B, steps, h), H0.clone()
    Es, ETs, P, R, NZ = (z.new_empty(s) for s in saved)
    if steps > 0:
        _call("enn_shared_forward", dt, z[:, :steps].contiguous(), M, H0,
              None if noise is None else noise[:steps], mask, counts, B, steps, N, h,
              trace_scale, decay, strength, trace_clip, inv_temperature, cosine_eps, top_k, A, m,
              H, Es, ETs, P, R, NZ)
    if mask is not None:  # padded steps: zero attention and recall
        A, m = A * mask[..., None], m * mask[..., None]
    if steps < T:  # steps that no sample reaches
        A, m, NZ = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, T - steps)) for t in (A, m, NZ))
        Es, ETs, P, R = (F.pad(t, (0, 0) * (t.dim() - 1) + (0, T - steps))
                         for t in (Es, ETs, P, R))
    return A, m, H, Es, ETs, P, R, NZ, counts


def _active_steps(lengths: Tensor | None, B: int, T: int):
    """The kernel's mask (B, steps) of 0/1 bytes or None, the active samples per step
    (T,) and the number of steps any sample reaches (lengths make a prefix of them)."""
    if lengths is None:
        return None, torch.full((T,), B, dtype=torch.int64), T
    lengths = _arg("lengths", lengths.to(torch.int64), (B,), torch.int64)
    mask = torch.arange(T) < lengths[:, None]  # (B, T)
    counts = mask.sum(0)  # (T,)
    steps = int((counts > 0).sum())
    return mask[:, :steps].to(torch.uint8).contiguous(), counts, steps


@shared_memory.register_fake
def _(z, M, H0, noise, lengths, trace_scale, decay, strength, trace_clip, inv_temperature,
      cosine_eps, top_k):
    shape_a, shape_m, shape_H, saved = _shared_shapes(z, M)
    out = [z.new_empty(s) for s in (shape_a, shape_m, shape_H, *saved)]
    return (*out, z.new_empty(z.shape[1], dtype=torch.int64))


@torch.library.custom_op("enn::shared_memory_backward", mutates_args=())
def shared_memory_backward(
    z: Tensor, lengths: Tensor | None, A: Tensor, Es: Tensor, ETs: Tensor, P: Tensor,
    R: Tensor, NZ: Tensor, gA: Tensor | None, gm: Tensor | None, gH: Tensor | None,
    trace_scale: float, decay: float, strength: float, trace_clip: float,
    inv_temperature: float, cosine_eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    B, T, h = z.shape
    N = Es.shape[1]
    mask, counts, steps = _active_steps(lengths, B, T)
    dz = torch.empty_like(z) if steps == T else torch.zeros_like(z)  # (B, T, h)
    dM, dH0 = z.new_empty(N, h), z.new_empty(N, h)
    if steps == 0:
        dM.zero_()
        dH0.copy_(gH if gH is not None else dM)
        return dz, dM, dH0
    gA, gm = (None if g is None else g[:, :steps] for g in (gA, gm))
    if mask is not None:  # padded steps' attention and recall are constant zeros
        gA, gm = (None if g is None else g * mask[..., None] for g in (gA, gm))
    gA, gm = (None if g is None else g.contiguous() for g in (gA, gm))
    dz_s = dz if steps == T else z.new_empty(B, steps, h)
    _call("enn_shared_backward", z.dtype, z[:, :steps].contiguous(), mask, counts,
          A[:, :steps].contiguous(), Es[:steps], ETs[:steps], P[:steps], R[:steps],
          NZ[:, :steps].contiguous(), gA, gm, None if gH is None else gH.contiguous(), B, steps,
          N, h, trace_scale, decay, strength, trace_clip, inv_temperature, cosine_eps, dz_s, dM,
          dH0)
    if steps < T:
        dz[:, :steps] = dz_s
    return dz, dM, dH0


@shared_memory_backward.register_fake
def _(z, lengths, A, Es, ETs, P, R, NZ, gA, gm, gH, trace_scale, decay, strength, trace_clip,
      inv_temperature, cosine_eps):
    N, h = Es.shape[1], z.shape[2]
    return torch.empty_like(z), z.new_empty(N, h), z.new_empty(N, h)


def _shared_setup(ctx, inputs, output):
    z, _M, _H0, _noise, lengths, *consts, _top_k = inputs
    A, _m, _H, Es, ETs, P, R, NZ, _counts = output
    ctx.save_for_backward(z, lengths, A, Es, ETs, P, R, NZ)
    ctx.consts = consts
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(Es, ETs, P, R, NZ, _counts)


def _shared_backward(ctx, gA, gm, gH, *_):
    z, lengths, A, Es, ETs, P, R, NZ = ctx.saved_tensors
    dz, dM, dH0 = torch.ops.enn.shared_memory_backward(z, lengths, A, Es, ETs, P, R, NZ, gA, gm,
                                                       gH, *ctx.consts)
    return (dz, dM, dH0) + (None,) * 9


shared_memory.register_autograd(_shared_backward, setup_context=_shared_setup)


# --- clipped memory ----------------------------------------------------------------------

KEY_MODES = ("none", "own", "shifted")  # the write key's address: see clipped_memory


def _clipped_shapes(s: Tensor, v: Tensor, key_mode: int, save: bool):
    B, T, N = s.shape
    h = v.shape[2]
    n_chunks = -(-T // checkpoint_spacing(T))
    key = (B, T, N) if KEY_MODES[key_mode] != "none" else _EMPTY
    return (B, T, N), (B, T, h), (B, N, h), key, ((B, n_chunks - 1, N, h) if save else _EMPTY)


def _number_or(t: Tensor | None, value: float) -> float:
    """The kernel's number for a rate: ``value`` where no per-step tensor ``t`` replaces it."""
    return value if t is None else 0.0


@torch.library.custom_op("enn::clipped_memory", mutates_args=())
def clipped_memory(
    s: Tensor, beta: Tensor, key_scores: Tensor | None, key_mode: int, valid: Tensor | None,
    mix: Tensor | None, v: Tensor, decays: Tensor | None, strengths: Tensor | None,
    H0: Tensor | None, lengths: Tensor | None, top_k: int, decay: float, strength: float,
    trace_clip: float, save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The memory of bank-addressed keys with the clip (``csrc/clipped_trace.inc``): the read
    address a_t = softmax(top_k(beta s_t)) from the scores s (B, T, N) (the cosines with the
    bank) and the sharpness beta (N,); the key's address k_t by ``KEY_MODES[key_mode]``: none
    (the write goes where the read does), own (from key_scores (B, T, N)) or shifted (a_{t-1},
    the first step's from key_scores (B, 1, N)), zero where ``valid`` (B, T) is false; the
    write address w_t = strength_t (mix k_t + (1 - mix) a_t), or without ``mix`` (a ()
    tensor) strength_t k_t; the per-sample trace H_t = clip(d_t H_{t-1} + outer(w_t, v_t))
    from values v (B, T, h), the decays and strengths (B, T) or None (``decay``, ``strength``
    for every step), the initial trace (B, N, h) or None (zeros) and lengths (B,) or None.
    Returns the read addresses (B, T, N), the reads a_t H_{t-1} (B, T, h) and the final
    trace (B, N, h), zero at padded steps, then the key addresses and the checkpoints the
    backward needs (``save``)."""
    _check_z(v)
    B, T, h = v.shape
    N = s.shape[2] if s.dim() == 3 else -1
    dt = v.dtype
    if key_mode not in range(len(KEY_MODES)):
        raise ValueError(f"enn: expected key_mode in 0..{len(KEY_MODES) - 1}, got {key_mode}")
    shifted = KEY_MODES[key_mode] == "shifted"
    s, beta = _arg("scores", s, (B, T, N), dt), _arg("beta", beta, (N,), dt)
    if KEY_MODES[key_mode] != "none":
        key_scores = _arg("key scores", key_scores, (B, 1 if shifted else T, N), dt)
        if key_scores is None:
            raise ValueError("enn: the write key's address needs key_scores")
    if valid is not None:
        valid = _arg("valid", valid.to(torch.uint8), (B, T), torch.uint8)
    decays, strengths = _arg("decays", decays, (B, T), dt), _arg("strengths", strengths, (B, T), dt)
    H0 = _arg("initial trace", H0, (B, N, h), dt)
    if lengths is not None:
        lengths = _arg("lengths", lengths.to(torch.int64), (B,), torch.int64).clamp(0, T)
    shapes = _clipped_shapes(s, v, key_mode, save)
    A, read, H, K, ckpt = (v.new_empty(shape) for shape in shapes)
    _call("enn_clipped_forward", dt, s, key_scores, beta, valid, v.contiguous(), decays,
          strengths, H0, lengths, T, N, h, checkpoint_spacing(T), top_k, key_mode,
          int(mix is not None), 0.0 if mix is None else float(mix), _number_or(decays, decay),
          _number_or(strengths, strength), trace_clip, A, K, read, H, ckpt if save else None, B)
    return A, read, H, K, ckpt


@clipped_memory.register_fake
def _(s, beta, key_scores, key_mode, valid, mix, v, decays, strengths, H0, lengths, top_k,
      decay, strength, trace_clip, save):
    return tuple(v.new_empty(shape) for shape in _clipped_shapes(s, v, key_mode, save))


@torch.library.custom_op("enn::clipped_memory_backward", mutates_args=())
def clipped_memory_backward(
    s: Tensor, beta: Tensor, key_scores: Tensor | None, key_mode: int, valid: Tensor | None,
    mix: Tensor | None, v: Tensor, decays: Tensor | None, strengths: Tensor | None,
    H0: Tensor | None, lengths: Tensor | None, top_k: int, decay: float, strength: float,
    trace_clip: float, A: Tensor, K: Tensor, ckpt: Tensor, g_A: Tensor | None,
    g_read: Tensor | None, g_HT: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    B, T, N = s.shape
    h = v.shape[2]
    g_s, g_v = torch.empty_like(s), torch.empty_like(v)
    g_beta, g_mix = v.new_empty(N), v.new_empty(())
    g_ks = _empty(v) if key_scores is None else torch.empty_like(key_scores)
    g_d = v.new_empty(B, T) if decays is not None else _empty(v)
    g_str = v.new_empty(B, T) if strengths is not None else _empty(v)
    g_H0 = v.new_empty(B, N, h)
    g_read = v.new_zeros(B, T, h) if g_read is None else g_read.contiguous()
    valid = None if valid is None else valid.to(torch.uint8).contiguous()
    if lengths is not None:
        lengths = lengths.to(torch.int64).clamp(0, T).contiguous()
    contiguous = [None if t is None else t.contiguous()
                  for t in (s, key_scores, beta, valid, v, decays, strengths, H0)]
    _call("enn_clipped_backward", v.dtype, *contiguous, lengths, T, N, h, checkpoint_spacing(T),
          top_k, key_mode, int(mix is not None), 0.0 if mix is None else float(mix),
          _number_or(decays, decay), _number_or(strengths, strength), trace_clip, A, K, ckpt,
          g_read, None if g_A is None else g_A.contiguous(),
          None if g_HT is None else g_HT.contiguous(), g_s,
          g_ks if key_scores is not None else None, g_v, g_d if decays is not None else None,
          g_str if strengths is not None else None, g_beta, g_mix, g_H0, B)
    return g_s, g_ks, g_beta, g_mix, g_v, g_d, g_str, g_H0


@clipped_memory_backward.register_fake
def _(s, beta, key_scores, key_mode, valid, mix, v, decays, strengths, H0, lengths, top_k,
      decay, strength, trace_clip, A, K, ckpt, g_A, g_read, g_HT):
    B, T, N = s.shape
    return (torch.empty_like(s),
            v.new_empty(_EMPTY) if key_scores is None else torch.empty_like(key_scores),
            v.new_empty(N), v.new_empty(()), torch.empty_like(v),
            v.new_empty((B, T) if decays is not None else _EMPTY),
            v.new_empty((B, T) if strengths is not None else _EMPTY),
            v.new_empty(B, N, v.shape[2]))


def _clipped_setup(ctx, inputs, output):
    *tensors, _save = inputs
    A, _read, _H, K, ckpt = output
    s, beta, key_scores, _mode, valid, mix, v, decays, strengths, H0, lengths = tensors[:11]
    ctx.save_for_backward(s, beta, key_scores, valid, mix, v, decays, strengths, H0, lengths,
                          A, K, ckpt)
    ctx.consts = tensors[3], *tensors[11:]  # key_mode, top_k, decay, strength, trace_clip
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(K, ckpt)


def _clipped_backward(ctx, g_A, g_read, g_HT, _g_K, _g_ckpt):
    s, beta, key_scores, valid, mix, v, decays, strengths, H0, lengths, A, K, ckpt = (
        ctx.saved_tensors)
    if ckpt.dim() != 4:
        raise RuntimeError("enn: this clipped memory ran without saving for the backward "
                           "(save=False)")
    key_mode, top_k, decay, strength, trace_clip = ctx.consts
    g_s, g_ks, g_beta, g_mix, g_v, g_d, g_str, g_H0 = torch.ops.enn.clipped_memory_backward(
        s, beta, key_scores, key_mode, valid, mix, v, decays, strengths, H0, lengths, top_k,
        decay, strength, trace_clip, A, K, ckpt, g_A, g_read, g_HT)
    present = [t is not None for t in (key_scores, mix, decays, strengths, H0)]
    g_ks, g_mix, g_d, g_str, g_H0 = (g if keep else None for g, keep in
                                     zip((g_ks, g_mix, g_d, g_str, g_H0), present, strict=True))
    return (g_s, g_beta, g_ks, None, None, g_mix, g_v, g_d, g_str, g_H0) + (None,) * 6


clipped_memory.register_autograd(_clipped_backward, setup_context=_clipped_setup)


# --- hidden pass --------------------------------------------------------------------------

def _step_mask(lengths: Tensor | None, T: int) -> Tensor | None:
    """(B, T) bytes, 1 at the steps before each sample's length; None without lengths."""
    return None if lengths is None else (torch.arange(T) < lengths[:, None]).to(torch.uint8)


@torch.library.custom_op("enn::hidden_pass", mutates_args=())
def hidden_pass(
    z: Tensor, m: Tensor, h0: Tensor, w_c: Tensor, b_c: Tensor | None, w_o: Tensor,
    b_o: Tensor | None, ln_w: Tensor, ln_b: Tensor, eps: float, lengths: Tensor | None,
    update: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Outputs (B, T, h), zero at padded steps, and the last state (B, h) of the hidden chain
    (7)-(8), or (12) with the residual or gated update (``update`` indexes
    ``HIDDEN_UPDATES``), given encodings z and recalls m (B, T, h); then what the backward
    needs. ``w_o`` (hu, 3h) and ``b_o`` (hu,) are W_o and b_o, with W_g and b_g below them
    when gated (hu = 2h; else h)."""
    _check_z(z)
    B, T, h = z.shape
    dt = z.dtype
    if update not in range(len(HIDDEN_UPDATES)):
        raise ValueError(f"enn: expected update in 0..{len(HIDDEN_UPDATES) - 1}, "
                         f"got {update}")
    hu = 2 * h if HIDDEN_UPDATES[update] == "gated" else h
    m, h0 = _arg("recall", m, (B, T, h), dt), _arg("h0", h0, (B, h), dt)
    w_c, w_o = _arg("weight_c", w_c, (3 * h, 3 * h), dt), _arg("weight_o", w_o, (hu, 3 * h), dt)
    b_c, b_o = _arg("bias_c", b_c, (3 * h,), dt), _arg("bias_o", b_o, (hu,), dt)
    ln_w, ln_b = _arg("ln_h_weight", ln_w, (h,), dt), _arg("ln_h_bias", ln_b, (h,), dt)
    mask = _step_mask(lengths, T)
    # the inputs' share of every step's c_t, W_c [z ; m] (B, T, 3h), in two large products
    # before the kernel walks the steps (the state's share; the bias is added there too)
    P = torch.mm(z.reshape(B * T, h), w_c[:, :h].t())
    P = P.addmm_(m.view(B * T, h), w_c[:, h:2 * h].t()).view(B, T, 3 * h)
    S, out, C, U = (z.new_empty(s) for s in ((B, T, h), (B, T, h), (B, T, 3 * h), (B, T, hu)))
    hT, MU, RS = z.new_empty(B, h), z.new_empty(B, T), z.new_empty(B, T)
    _call("enn_hidden_forward", dt, P, S, h0, w_c, w_o, b_c, b_o, ln_w, ln_b, eps, update, mask,
          B, T, h, out, hT, C, U, MU, RS)
    return out, hT, S, C, U, MU, RS


@hidden_pass.register_fake
def _(z, m, h0, w_c, b_c, w_o, b_o, ln_w, ln_b, eps, lengths, update):
    B, T, h = z.shape
    return (z.new_empty(B, T, h), z.new_empty(B, h), z.new_empty(B, T, h),
            z.new_empty(B, T, 3 * h), z.new_empty(B, T, w_o.shape[0]), z.new_empty(B, T),
            z.new_empty(B, T))


@torch.library.custom_op("enn::hidden_pass_backward", mutates_args=())
def hidden_pass_backward(
    g_out: Tensor | None, g_hT: Tensor | None, w_c: Tensor, w_o: Tensor, ln_w: Tensor,
    update: int, lengths: Tensor | None, z: Tensor, m: Tensor, S: Tensor, C: Tensor,
    U: Tensor, MU: Tensor, RS: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    B, T, h = z.shape
    hu = w_o.shape[0]
    mask = _step_mask(lengths, T)
    g_out = z.new_zeros(B, T, h) if g_out is None else g_out.contiguous()
    g_hT = None if g_hT is None else g_hT.contiguous()
    # G_pre and G_u (the gradients before the ReLUs and the gate's sigmoid) are the kernel's
    # working buffers
    G_pre, G_u, g_h0 = z.new_empty(B, T, 3 * h), z.new_empty(B, T, hu), z.new_empty(B, h)
    g_vec = z.new_empty(5 * h + hu)  # the gradients of ln_w, ln_b, b_o (and b_g), b_c
    g_w_c, g_w_o = z.new_empty(3 * h, 3 * h), z.new_empty(hu, 3 * h)
    w_c = w_c.contiguous()
    _call("enn_hidden_backward", z.dtype, g_out, g_hT, w_c, w_o.contiguous(),
          ln_w.contiguous(), update, mask, z.contiguous(), m.contiguous(), S, C, U, MU, RS,
          B, T, h, G_pre, G_u, g_h0, g_w_c, g_w_o, g_vec)
    # z's and m's gradients, G_pre W_c[:, :2h], in two large products after the loop
    G = G_pre.view(B * T, 3 * h)
    g_z, g_m = (torch.mm(G, w_c[:, k * h:(k + 1) * h]).view(B, T, h) for k in (0, 1))
    return g_z, g_m, g_h0, g_w_c, g_w_o, g_vec


@hidden_pass_backward.register_fake
def _(g_out, g_hT, w_c, w_o, ln_w, update, lengths, z, m, S, C, U, MU, RS):
    B, T, h = z.shape
    hu = w_o.shape[0]
    return (torch.empty_like(z), torch.empty_like(z), z.new_empty(B, h),
            z.new_empty(3 * h, 3 * h), z.new_empty(hu, 3 * h), z.new_empty(5 * h + hu))


def _hidden_setup(ctx, inputs, output):
    z, m, _h0, w_c, b_c, w_o, b_o, ln_w, _ln_b, _eps, lengths, update = inputs
    _out, _hT, S, C, U, MU, RS = output
    ctx.save_for_backward(w_c, w_o, ln_w, lengths, z, m, S, C, U, MU, RS)
    ctx.update = update
    ctx.has_bias = b_c is not None, b_o is not None
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(S, C, U, MU, RS)


def _hidden_backward(ctx, g_out, g_hT, *_):
    w_c, w_o, ln_w, *rest = ctx.saved_tensors
    g_z, g_m, g_h0, g_w_c, g_w_o, g_vec = torch.ops.enn.hidden_pass_backward(
        g_out, g_hT, w_c, w_o, ln_w, ctx.update, *rest)
    h, hu = g_z.shape[-1], w_o.shape[0]
    g_lnw, g_lnb, g_b_o, g_b_c = g_vec.split([h, h, hu, 3 * h])
    has_b_c, has_b_o = ctx.has_bias
    return (g_z, g_m, g_h0, g_w_c, g_b_c if has_b_c else None, g_w_o,
            g_b_o if has_b_o else None, g_lnw, g_lnb, None, None, None)


hidden_pass.register_autograd(_hidden_backward, setup_context=_hidden_setup)
