"""One Engram layer: the encoder (1), then the memory pass (2-6, 9) and the hidden pass
(7-8, 12), each on the fastest backend that applies to its inputs.

Memory backends: ``native`` (the C kernels of ``native.py``: float32/64 on the CPU),
``triton`` (the fused recurrent kernels of ``triton_memory.py``, for CUDA tensors where
Triton is installed), ``torch`` (``naive.py``: everywhere, and the only one that records the
trace of every step). Those kernels run the paper's cell. A memory with the options of eqs.
(10)-(11) whose addresses do not read the trace runs on ``bank.py``'s paths: in chunks
(``chunk``) where it is a linear recurrence, on the clipped scan (``scan``: native on the
CPU, Triton on CUDA) where the clip acts; elsewhere on ``torch``. The hidden pass runs
``native`` (every update) on float32/64 CPU tensors outside autocast, else ``naive_hidden``
(on CUDA, cuBLAS runs its products).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from . import bank, native
from .common import (
    HIDDEN_UPDATES,
    EngramHyper,
    EngramState,
    EngramWeights,
    MemoryOutput,
    OptionWeights,
    needs_grad,
    triton_available,
)
from .naive import encode, naive_hidden, naive_memory

BACKENDS = ("auto", "native", "triton", "torch")
NO_OPTIONS = OptionWeights()  # the paper's cell learns nothing beyond EngramWeights


def check_weights(weights: EngramWeights) -> None:
    """Every parameter on the memory bank's device and in its dtype (the state's precision),
    so that no backend misreads one."""
    ref = weights.memory
    for name, w in zip(EngramWeights._fields, weights, strict=True):
        if w is None:
            continue
        if w.dtype != ref.dtype:
            raise TypeError(f"enn: expected {name} of dtype {ref.dtype} (the memory bank's), "
                            f"got {w.dtype}")
        if w.device != ref.device:
            raise ValueError(f"enn: expected {name} on {ref.device} (the memory bank's), "
                             f"got {w.device}")


def choose_backend(z: Tensor, record_traces: bool = False, backend: str = "auto",
                   memory_size: int | None = None) -> str:
    """The backend of the paper's memory pass for encodings like ``z`` and a bank of
    ``memory_size`` slots (None: not checked against the Triton kernels' tile)."""
    if backend not in BACKENDS:
        raise ValueError(f"enn: expected backend in {BACKENDS}, got {backend!r}")
    if record_traces and backend in ("native", "triton"):
        raise ValueError(f"enn: the {backend} backend does not record the trace of every "
                         f"step; record_traces needs backend 'auto' or 'torch'")
    if backend == "torch":
        return "torch"
    if backend == "triton" or (backend == "auto" and z.device.type == "cuda"):
        if triton_available():
            if record_traces:  # backend "auto": only the reference records the traces
                return "torch"
            from .triton_memory import tile_fits

            if memory_size is None or tile_fits(memory_size, z.shape[-1], backend == "triton"):
                return "triton"
        elif backend == "triton":
            raise RuntimeError("enn: the triton backend needs the triton package")
    fits = native.supports(z)
    if backend == "native" and not fits:
        raise RuntimeError(f"enn: the native backend needs float32/64 CPU tensors and built "
                           f"kernels; got {z.dtype} on {z.device}, kernels "
                           f"{'built' if native.available() else 'not available'}")
    return "native" if fits and not record_traces else "torch"


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for this device type (where it exists)."""
    return (torch.amp.is_autocast_available(device_type)
            and torch.is_autocast_enabled(device_type))


def hidden_backend(z: Tensor, backend: str = "auto") -> str:
    """The backend of the hidden pass for encodings like ``z``: ``native`` wherever the
    kernels take z, unless the layer is held to ``torch``."""
    if backend != "torch" and native.supports(z) and not autocast_enabled(z.device.type):
        return "native"
    return "torch"


def layer_backends(z: Tensor, hyper: EngramHyper, noise: Tensor | None = None,
                   record_traces: bool = False, backend: str = "auto",
                   memory_size: int | None = None) -> tuple[str, str]:
    """The backends of the memory pass and of the hidden pass of a layer with these
    settings."""
    return (layer_backend(z, hyper, noise, record_traces, backend, memory_size),
            hidden_backend(z, backend))


def layer_backend(z: Tensor, hyper: EngramHyper, noise: Tensor | None = None,
                  record_traces: bool = False, backend: str = "auto",
                  memory_size: int | None = None) -> str:
    """The backend of the memory pass of a layer with these settings and a bank of
    ``memory_size`` slots (None: not checked against the Triton kernels' tile)."""
    if hyper.paper_memory:
        return choose_backend(z, record_traces, backend, memory_size)
    choose_backend(z, record_traces, backend)  # checks the backend asked for
    if backend in ("native", "triton"):
        raise RuntimeError(f"enn: the {backend} backend runs the paper's memory only; "
                           f"this layer's options need backend 'auto' or 'torch'")
    cfg, noisy = hyper.memory, noise is not None
    decay = None if hyper.neuromodulation else hyper.decay
    if backend == "auto" and not record_traces:
        if bank.chunk_applies(cfg, decay, noisy):
            return "chunk"
        if bank.scan_applies(cfg, noisy, z, memory_size):
            return "scan"
    return "torch"


def memory_inputs(z: Tensor, hyper: EngramHyper, options: OptionWeights,
                  previous_key: Tensor | None):
    """The memory interface's inputs for a layer: the first step's write key (B, 1, h) or None
    (the key of step t >= 1 is z_{t-1}, (10)), the decay and the write strength (9, 11) and
    the config with a learned sharpness (4)."""
    cfg = hyper.memory
    if options.log_sharpness is not None:
        cfg = replace(cfg, inv_temperature=options.log_sharpness.exp())
    first = key_mix = None
    if hyper.write_key != "current":  # (10) the previous step's encoding
        first = (z.new_zeros(z[:, :1].shape) if previous_key is None
                 else previous_key[:, None].to(z.dtype))
        if hyper.write_key == "mix":
            key_mix = torch.sigmoid(options.write_mix)
    decay, strength = hyper.decay, hyper.hebbian_lr
    if hyper.neuromodulation:  # (11)
        gates = torch.sigmoid(F.linear(z, options.weight_mod, options.bias_mod))  # (B, T, 2)
        strength, decay = gates.unbind(-1)
    return cfg, first, key_mix, decay, strength


def memory_pass(
    z: Tensor, memory: Tensor, hyper: EngramHyper, noise: Tensor | None,
    initial_state: Tensor | None, lengths: Tensor | None, record_traces: bool, backend: str,
    options: OptionWeights = NO_OPTIONS, previous_key: Tensor | None = None,
) -> tuple[MemoryOutput, Tensor]:
    """The memory over encodings z (B, T, h): query and value z; the paper's cell writes
    where it reads, with strength eta and decay d (1 - eta unless ``trace_decay`` is set).
    Returns (MemoryOutput, final trace)."""
    if not hyper.paper_memory:
        cfg, first, key_mix, decay, strength = memory_inputs(z, hyper, options, previous_key)
        if backend == "torch":
            k = None if first is None else torch.cat([first, z[:, :-1]], dim=1)  # (B, T, h)
            return naive_memory(z, k, z, memory, decay, strength, cfg, noise, initial_state,
                                True, lengths, record_traces, key_mix)
        run = {"chunk": bank.chunk_memory, "scan": bank.scan_memory}[backend]
        return run(z, first, z, memory, decay, strength, cfg, noise, initial_state, True,
                   lengths, key_mix=key_mix, shifted_key=first is not None)
    cfg = hyper.memory
    eta, decay = hyper.hebbian_lr, hyper.decay
    if backend == "torch":
        return naive_memory(z, None, z, memory, decay, eta, cfg, noise, initial_state, True,
                            lengths, record_traces)
    if backend == "triton":
        from .triton_memory import fused_recurrent_memory

        return fused_recurrent_memory(z, memory, decay, eta, cfg, noise, initial_state, True,
                                      lengths)
    consts = (cfg.trace_scale, decay, eta, cfg.trace_clip, cfg.inv_temperature, cfg.cosine_eps,
              cfg.top_k or 0)
    if cfg.shared:
        H0 = z.new_zeros(memory.shape) if initial_state is None else initial_state
        A, m, H, *_ = torch.ops.enn.shared_memory(z, memory, H0, noise, lengths, *consts)
    else:
        save = needs_grad(z, memory, initial_state)
        A, m, H, *_ = torch.ops.enn.per_sample_memory(z, memory, initial_state, noise, lengths,
                                                      *consts, save)
    return MemoryOutput(A, m), H


def hidden_pass(z: Tensor, m: Tensor, h0: Tensor, w: EngramWeights, eps: float,
                lengths: Tensor | None, backend: str, update: str = "paper",
                options: OptionWeights = NO_OPTIONS) -> tuple[Tensor, Tensor]:
    """The hidden chain (7)-(8), or (12): outputs (B, T, h) and the last state (B, h)."""
    if backend == "torch":
        return naive_hidden(z, m, h0, w, eps, lengths, update, (options.weight_g, options.bias_g))
    w_o, b_o = w.weight_o, w.bias_o
    if update == "gated":  # one product gives u's and the gate's pre-activations
        w_o = torch.cat([w_o, options.weight_g])
        b_o = None if b_o is None else torch.cat([b_o, options.bias_g])
    out, h_n, *_ = torch.ops.enn.hidden_pass(z, m, h0, w.weight_c, w.bias_c, w_o, b_o,
                                             w.ln_h_weight, w.ln_h_bias, eps, lengths,
                                             HIDDEN_UPDATES.index(update))
    return out, h_n


def engram_layer(
    x: Tensor, weights: EngramWeights, hyper: EngramHyper,
    initial_state: EngramState | None = None, output_final_state: bool = False,
    lengths: Tensor | None = None, noise: Tensor | None = None, record_traces: bool = False,
    backend: str = "auto", options: OptionWeights = NO_OPTIONS,
) -> tuple[Tensor, EngramState | None, MemoryOutput]:
    """One layer over x (B, T, d). Returns (o (B, T, h), final state or None, MemoryOutput).

    ``initial_state`` None stands for zeros; ``lengths`` (B,) marks padded steps (t >=
    lengths[b]), which leave sample b's state alone and output zeros; ``noise`` (T, N, h) is
    the trace noise of each step (one draw for the batch); ``options`` holds the learnable
    tensors of the options that ``hyper`` turns on. The memory and the state keep the
    parameters' precision, also under autocast.
    """
    check_weights(weights)
    dtype = weights.memory.dtype
    z = encode(x, weights, hyper.ln_eps).to(dtype)  # (B, T, h)
    h0 = z.new_zeros(z.shape[0], z.shape[2]) if initial_state is None else initial_state.h
    H0 = None if initial_state is None else initial_state.trace.to(dtype)
    key0 = None if initial_state is None else initial_state.key
    noise = None if noise is None else noise.to(dtype)
    mem_backend, hid_backend = layer_backends(z, hyper, noise, record_traces, backend,
                                              weights.memory.shape[0])
    no_autocast = (torch.autocast(x.device.type, enabled=False)
                   if autocast_enabled(x.device.type) else contextlib.nullcontext())
    with no_autocast:
        mem, H = memory_pass(z, weights.memory, hyper, noise, H0, lengths, record_traces,
                             mem_backend, options, key0)
    o, h = hidden_pass(z, mem.recall, h0.to(dtype), weights, hyper.ln_eps, lengths,
                       hid_backend, hyper.hidden_update, options)
    if not output_final_state:
        return o.to(dtype), None, mem
    last = z[:, -1] if lengths is None else z[torch.arange(z.shape[0]), lengths - 1]  # (B, h)
    return o.to(dtype), EngramState(h.to(dtype), H, last), mem
