"""``EngramCell`` and ``Engram``: the ENN as layers shaped like ``nn.LSTMCell`` / ``nn.LSTM``."""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..ops.engram import (
    HIDDEN_UPDATES,
    SHARPNESS,
    TRACE_MODES,
    WRITE_KEYS,
    EngramHyper,
    EngramIntermediates,
    EngramState,
    EngramWeights,
    OptionWeights,
    attention_entropy,
    engram_layer,
    layer_backends,
    row_entropy,
)
from ..ops.engram.layer import autocast_enabled

INIT_STATES = ("zeros", "random")
RANDOM_INIT_STD = 0.01  # the reference draws h_0 and H_0 from Normal(0, 0.01^2)
_PARAM_NAMES = EngramWeights._fields


def _he_normal_(w: Tensor) -> None:
    """Keras HeNormal: truncated normal (2 std) with std sqrt(2 / fan_in) / 0.8796..."""
    std = math.sqrt(2.0 / w.shape[1]) / 0.87962566103423978
    nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)


def _glorot_uniform_(w: Tensor) -> None:
    """Keras GlorotUniform for an (N, h) bank: fan_in N, fan_out h."""
    limit = math.sqrt(6.0 / (w.shape[0] + w.shape[1]))
    nn.init.uniform_(w, -limit, limit)


class _EngramBase(nn.Module):
    """Hyper-parameters, validation and per-layer parameters shared by the cell and the layer."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool,
        *,
        memory_size: int = 64,
        hebbian_lr: float = 0.05,
        trace_scale: float = 0.5,
        temperature: float = 1.5,
        sparsity: float = 0.1,
        trace_clip: float | None = 0.1,
        trace_noise: float = 0.001,
        trace: str = "per_sample",
        init_state: str = "zeros",
        top_k: int | None = None,
        sparsity_penalty: float = 0.0,
        slot_diversity: float = 0.0,
        layer_norm_eps: float = 1e-6,
        trace_decay: float | None = None,
        write_key: str = "current",
        address_trace: bool = True,
        delta_rule: bool = False,
        sharpness: str = "fixed",
        neuromodulation: bool = False,
        cosine_eps: float = 0.0,
        hidden_update: str = "paper",
    ) -> None:
        super().__init__()
        for name, value in (
            ("input_size", input_size), ("hidden_size", hidden_size), ("memory_size", memory_size)
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        _check_range("hebbian_lr", hebbian_lr, 0.0, 1.0)
        _check_range("trace_scale", trace_scale, 0.0)
        _check_range("sparsity", sparsity, 0.0)
        _check_range("trace_noise", trace_noise, 0.0)
        _check_range("sparsity_penalty", sparsity_penalty, 0.0)
        _check_range("slot_diversity", slot_diversity, 0.0)
        _check_range("cosine_eps", cosine_eps, 0.0)
        for name, value in (
            ("temperature", temperature),
            ("trace_clip", 1.0 if trace_clip is None else trace_clip),
            ("layer_norm_eps", layer_norm_eps),
        ):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        if trace_decay is not None:
            _check_range("trace_decay", trace_decay, 0.0, 1.0)
        for name, value, choices in (("write_key", write_key, WRITE_KEYS),
                                     ("sharpness", sharpness, SHARPNESS),
                                     ("hidden_update", hidden_update, HIDDEN_UPDATES)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        if trace not in TRACE_MODES:
            raise ValueError(f"trace must be one of {TRACE_MODES}, got {trace!r}")
        if neuromodulation and trace == "shared":
            raise ValueError("neuromodulation gates each sample's write, so it needs "
                             "trace='per_sample', got trace='shared'")
        if init_state not in INIT_STATES:
            raise ValueError(f"init_state must be one of {INIT_STATES}, got {init_state!r}")
        if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k <= memory_size):
            raise ValueError(f"top_k must be None or an integer in [1, memory_size={memory_size}], "
                             f"got {top_k!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.memory_size = memory_size
        self.trace_noise = float(trace_noise)
        self.init_state = init_state
        self.sparsity_penalty = float(sparsity_penalty)
        self.slot_diversity = float(slot_diversity)
        self.hyper = EngramHyper(
            hebbian_lr=float(hebbian_lr), trace_scale=float(trace_scale),
            temperature=float(temperature), sparsity=float(sparsity),
            trace_clip=None if trace_clip is None else float(trace_clip), trace_mode=trace,
            top_k=top_k, ln_eps=float(layer_norm_eps),
            trace_decay=None if trace_decay is None else float(trace_decay),
            write_key=write_key, address_trace=bool(address_trace), delta_rule=bool(delta_rule),
            sharpness=sharpness, neuromodulation=bool(neuromodulation),
            cosine_eps=float(cosine_eps), hidden_update=hidden_update,
        )
        # Filled by forward when sparsity_penalty or slot_diversity > 0: the weighted
        # attention terms, a differentiable addition to the training loss.
        self.aux_loss: Tensor | None = None
        # The backends each layer ran in the last forward, bottom first: the memory pass's
        # ("native", "scan", "chunk", "triton" or "torch"), then "/" and the hidden pass's
        # where it differs (docs/model.md).
        self.last_path: tuple[str, ...] = ()

    @property
    def trace_mode(self) -> str:
        return self.hyper.trace_mode

    hebbian_lr = property(lambda self: self.hyper.hebbian_lr)
    trace_scale = property(lambda self: self.hyper.trace_scale)
    temperature = property(lambda self: self.hyper.temperature)
    sparsity = property(lambda self: self.hyper.sparsity)
    trace_clip = property(lambda self: self.hyper.trace_clip)
    top_k = property(lambda self: self.hyper.top_k)
    layer_norm_eps = property(lambda self: self.hyper.ln_eps)
    trace_decay = property(lambda self: self.hyper.trace_decay)
    write_key = property(lambda self: self.hyper.write_key)
    address_trace = property(lambda self: self.hyper.address_trace)
    delta_rule = property(lambda self: self.hyper.delta_rule)
    sharpness = property(lambda self: self.hyper.sharpness)
    neuromodulation = property(lambda self: self.hyper.neuromodulation)
    cosine_eps = property(lambda self: self.hyper.cosine_eps)
    hidden_update = property(lambda self: self.hyper.hidden_update)

    def __getstate__(self) -> dict:
        # the last forward's aux_loss holds its graph, which neither copies nor pickles
        return {**super().__getstate__(), "aux_loss": None}

    def options(self) -> dict:
        """The ENN keyword arguments that rebuild this layer's settings:
        ``type(layer)(input_size, hidden_size, ..., **layer.options())``."""
        names = ("memory_size", "hebbian_lr", "trace_scale", "temperature", "sparsity",
                 "trace_clip", "trace_noise", "init_state", "top_k", "sparsity_penalty",
                 "slot_diversity", "layer_norm_eps", "trace_decay", "write_key",
                 "address_trace", "delta_rule", "sharpness", "neuromodulation", "cosine_eps",
                 "hidden_update")
        return {"trace": self.trace_mode, **{name: getattr(self, name) for name in names}}

    @property
    def memory_dtype(self) -> torch.dtype:
        """The precision of the state: that of the memory bank."""
        return self._bank().dtype

    def _bank(self) -> Tensor:
        """The first layer's memory bank M, whose device and dtype the state takes."""
        return next(p for n, p in self.named_parameters() if n.startswith("memory"))

    def _option_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shapes of the parameters of the options this layer turns on."""
        hp, h = self.hyper, self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {}
        if hp.sharpness != "fixed":
            shapes["log_sharpness"] = () if hp.sharpness == "layer" else (self.memory_size,)
        if hp.write_key == "mix":
            shapes["write_mix"] = ()
        if hp.neuromodulation:
            shapes.update(weight_mod=(2, h), bias_mod=(2,))
        if hp.hidden_update == "gated":
            shapes["weight_g"] = (h, 3 * h)
            if self.bias:
                shapes["bias_g"] = (h,)
        return shapes

    def _add_layer_params(self, suffix: str, in_size: int, factory: dict) -> None:
        h, N = self.hidden_size, self.memory_size
        shapes = {
            "weight_z": (h, in_size), "bias_z": (h,), "ln_z_weight": (h,), "ln_z_bias": (h,),
            "memory": (N, h), "weight_c": (3 * h, 3 * h), "bias_c": (3 * h,),
            "weight_o": (h, 3 * h), "bias_o": (h,), "ln_h_weight": (h,), "ln_h_bias": (h,),
        }
        for name in _PARAM_NAMES:
            if name.startswith("bias_") and not self.bias:
                self.register_parameter(name + suffix, None)
            else:
                self.register_parameter(
                    name + suffix, nn.Parameter(torch.empty(shapes[name], **factory))
                )
        for name, shape in self._option_shapes().items():
            self.register_parameter(name + suffix, nn.Parameter(torch.empty(shape, **factory)))

    def _layer_weights(self, suffix: str) -> EngramWeights:
        return EngramWeights(*(getattr(self, name + suffix) for name in _PARAM_NAMES))

    def _layer_options(self, suffix: str) -> OptionWeights:
        return OptionWeights(**{name: getattr(self, name + suffix)
                                for name in self._option_shapes()})

    def reset_parameters(self) -> None:
        """The reference's initialisation: He-normal weights, Glorot-uniform bank, zero biases,
        unit LayerNorm gains. The memory options start where their fixed counterparts are (the
        sharpness at 1 / tau_eff, the modulated rates at hebbian_lr and the decay); the gate of
        the gated update is Glorot-uniform with a zero bias, so it starts near 1/2."""
        hp = self.hyper
        with torch.no_grad():
            for suffix in self._suffixes:
                for name, p in self._layer_weights(suffix)._asdict().items():
                    if p is None:
                        continue
                    if name in ("weight_z", "weight_c", "weight_o"):
                        _he_normal_(p)
                    elif name == "memory":
                        _glorot_uniform_(p)
                    elif name in ("ln_z_weight", "ln_h_weight"):
                        nn.init.ones_(p)
                    else:
                        nn.init.zeros_(p)
                o = self._layer_options(suffix)
                if o.log_sharpness is not None:
                    o.log_sharpness.fill_(-math.log(hp.effective_temperature))
                if o.write_mix is not None:
                    o.write_mix.zero_()  # half the previous key's address, half the read's
                if o.weight_mod is not None:
                    o.weight_mod.zero_()
                    o.bias_mod.copy_(torch.tensor([_logit(hp.hebbian_lr), _logit(hp.decay)]))
                if o.weight_g is not None:
                    nn.init.xavier_uniform_(o.weight_g)
                    if o.bias_g is not None:
                        o.bias_g.zero_()

    def _initial_layer_state(self, batch: int, like: Tensor) -> EngramState:
        """Default state for one layer: zeros, or the reference's random draw while training
        (the key stays zero: no previous step)."""
        h_shape = (batch, self.hidden_size)
        trace_shape = (self.memory_size, self.hidden_size)
        if self.trace_mode == "per_sample":
            trace_shape = (batch, *trace_shape)
        factory = {"device": like.device, "dtype": self.memory_dtype}
        key = torch.zeros(h_shape, **factory)
        if self.init_state == "random" and self.training:
            return EngramState(
                RANDOM_INIT_STD * torch.randn(h_shape, **factory),
                RANDOM_INIT_STD * torch.randn(trace_shape, **factory), key,
            )
        return EngramState(torch.zeros(h_shape, **factory), torch.zeros(trace_shape, **factory),
                           key)

    def _check_input(self, input: Tensor, batched_ranks: tuple[int, int]) -> None:
        unbatched_rank, batched_rank = batched_ranks
        if not isinstance(input, Tensor):
            raise TypeError(f"{type(self).__name__}: expected input to be a Tensor, "
                            f"got {type(input).__name__}")
        if not input.is_floating_point():
            raise TypeError(f"{type(self).__name__}: expected a floating-point input, got "
                            f"{input.dtype} (token ids need an nn.Embedding first)")
        if input.dim() not in (unbatched_rank, batched_rank):
            raise ValueError(
                f"{type(self).__name__}: expected input of {unbatched_rank} (unbatched) or "
                f"{batched_rank} (batched) dimensions, got {input.dim()} with shape "
                f"{tuple(input.shape)}"
            )
        if input.size(-1) != self.input_size:
            raise ValueError(f"{type(self).__name__}: expected input.size(-1) == input_size="
                             f"{self.input_size}, got {input.size(-1)}")
        autocast = autocast_enabled(input.device.type) and {input.dtype, self.memory_dtype} <= {
            torch.float32, torch.float16, torch.bfloat16}  # what autocast casts: not float64
        if input.dtype != self.memory_dtype and not autocast:
            raise ValueError(f"{type(self).__name__}: expected input of dtype "
                             f"{self.memory_dtype} (the layer's parameters'), got {input.dtype}")

    def _set_aux_loss(self, per_layer: list[Tensor | None]) -> None:
        self.aux_loss = None if per_layer[0] is None else torch.stack(per_layer).mean()

    def _layer_aux_loss(self, attention: Tensor, lengths: Tensor | None) -> Tensor | None:
        """The layer's weighted attention terms (B, T, N) -> (), or None when both are off:
        the mean entropy of each read, and how far the reads' mean over the batch and steps
        is from using every slot alike (ln N minus its entropy; 0 when uniform)."""
        mask = _real_steps(attention, lengths)
        terms = []
        if self.sparsity_penalty > 0:
            terms.append(self.sparsity_penalty * _masked_entropy(attention, mask))
        if self.slot_diversity > 0:
            usage = _slot_usage(attention, mask)  # (N,)
            gap = math.log(self.memory_size) - attention_entropy(usage)
            terms.append(self.slot_diversity * gap)
        return sum(terms) if terms else None

    def _run_layer(
        self, x: Tensor, suffix: str, state: EngramState | None,
        lengths: Tensor | None = None, keep_steps: bool = False,
    ) -> tuple[Tensor, EngramState, Tensor | None, EngramIntermediates | None, str]:
        """One layer over x (B, T, d). The training noise is one (N, h) draw per step from
        torch's generator, shared by the batch."""
        weights = self._layer_weights(suffix)
        noise = None
        if self.training and self.trace_noise > 0:
            shape = (x.size(1), self.memory_size, self.hidden_size)  # (T, N, h)
            noise = self.trace_noise * torch.randn(shape, device=x.device,
                                                   dtype=weights.memory.dtype)
        o, final, mem = engram_layer(x, weights, self.hyper, state, True, lengths, noise,
                                     record_traces=keep_steps,
                                     options=self._layer_options(suffix))
        aux = self._layer_aux_loss(mem.attention, lengths)
        record = None
        if keep_steps:
            record = EngramIntermediates(mem.attention, mem.recall, mem.traces)
        path = "/".join(dict.fromkeys(layer_backends(o, self.hyper, noise, keep_steps,
                                                      memory_size=self.memory_size)))
        return o, final, aux, record, path

    def extra_repr(self) -> str:
        """Like nn.LSTM's: the sizes, then every argument that is not at its default (the
        memory's size and trace mode always)."""
        parts = [f"{self.input_size}, {self.hidden_size}"]
        for name, default in (("num_layers", 1), ("bias", True), ("batch_first", False),
                              ("dropout", 0.0)):
            if getattr(self, name, default) != default:  # a cell has no layers or batch_first
                parts.append(f"{name}={getattr(self, name)!r}")
        options = self.options()
        parts.append(f"memory_size={options.pop('memory_size')}, trace={options.pop('trace')!r}")
        parts += [f"{name}={value!r}" for name, value in options.items()
                  if value != OPTION_DEFAULTS[name]]
        return ", ".join(parts)


# The memory options (the keyword-only arguments of both layers) and their defaults.
OPTION_DEFAULTS = {name: p.default for name, p in
                   inspect.signature(_EngramBase.__init__).parameters.items()
                   if p.kind is p.KEYWORD_ONLY}


def _real_steps(attention: Tensor, lengths: Tensor | None) -> Tensor | None:
    """(B, T) bool: the steps of attention (B, T, N) that are not padding; None: all."""
    if lengths is None:
        return None
    return torch.arange(attention.size(1), device=attention.device) < lengths[:, None]


def _masked_entropy(attention: Tensor, mask: Tensor | None) -> Tensor:
    """Mean entropy (nats) of the attention rows (B, T, N) of real steps (mask (B, T) or
    None: all): per step over the samples still running, then over the steps."""
    ent = row_entropy(attention)  # (B, T)
    if mask is None:
        return ent.mean()
    per_step = (ent * mask).sum(0) / mask.sum(0).clamp_min(1)  # (T,)
    return per_step[mask.any(0)].mean()


def _slot_usage(attention: Tensor, mask: Tensor | None) -> Tensor:
    """The mean attention (N,) over the real steps (mask (B, T) or None: all) of (B, T, N)."""
    if mask is None:
        return attention.mean((0, 1))
    return (attention * mask[..., None]).sum((0, 1)) / mask.sum().clamp_min(1)


def _stack_layers(per_layer: list[Tensor]) -> Tensor:
    """The layers' final states along a new first dimension; one layer's as a view (its
    per-sample trace is megabytes, which a stack would copy at every call)."""
    return per_layer[0].unsqueeze(0) if len(per_layer) == 1 else torch.stack(per_layer)


def _unpack_state(hx) -> tuple[Tensor, Tensor, Tensor | None]:
    """(h, trace, key) from an EngramState or a tuple (h, trace[, key]); a missing key is None
    (zeros: no previous step)."""
    if not (isinstance(hx, tuple) and len(hx) in (2, 3)):
        got = (f"a tuple of length {len(hx)}" if isinstance(hx, tuple)
               else type(hx).__name__)
        raise TypeError(f"expected hx to be an EngramState(h, trace, key), a tuple (h, trace) "
                        f"or None, got {got}")
    return hx[0], hx[1], (hx[2] if len(hx) == 3 else None)


def _logit(p: float) -> float:
    p = min(max(p, 1e-3), 1 - 1e-3)  # a rate of exactly 0 or 1 starts its gate near there
    return math.log(p / (1 - p))


def _check_option_names(layer: str, options: dict) -> None:
    """The layer's name in the error, not the base class's (as Python's own would say)."""
    unknown = [name for name in options if name not in OPTION_DEFAULTS]
    if unknown:
        raise TypeError(f"{layer}: unexpected keyword argument(s) {', '.join(unknown)}")


def _check_range(name: str, value: float, low: float, high: float | None = None) -> None:
    if (not isinstance(value, int | float) or not math.isfinite(value) or value < low
            or (high is not None and value > high)):
        bound = f"in [{low}, {high}]" if high is not None else f"finite and >= {low}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def _check_state_shape(what: str, tensor: Tensor, expected: tuple[int, ...],
                       device: torch.device) -> None:
    """A state tensor of the expected shape, on the input's device (its dtype is cast to the
    layer's)."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"expected {what} to be a Tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape) != expected:
        raise ValueError(f"expected {what} of shape {expected}, got {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise TypeError(f"expected {what} to be floating point, got {tensor.dtype}")
    if tensor.device != device:
        raise ValueError(f"expected {what} on {device} like the input, got {tensor.device}")


class EngramCell(_EngramBase):
    r"""One step of the Engram Neural Network, like ``nn.LSTMCell``.

    ``cell(input, hx=None) -> EngramState(h, trace, key)`` with input (B, input_size) or
    (input_size,), h (B, hidden_size), trace (B, memory_size, hidden_size) per sample or
    (memory_size, hidden_size) shared, and key (B, hidden_size), the step's encoding (the
    next step's write key with ``write_key="previous"`` or ``"mix"``). ``h`` is the step's
    output. ``hx`` may also be a pair (h, trace), the key then zeros. See :class:`Engram` for
    the arguments.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, device=None,
                 dtype=None, **options) -> None:
        _check_option_names(type(self).__name__, options)
        super().__init__(input_size, hidden_size, bias, **options)
        self._suffixes = [""]
        self._add_layer_params("", input_size, {"device": device, "dtype": dtype})
        self.reset_parameters()

    def forward(self, input: Tensor, hx: EngramState | tuple[Tensor, ...] | None = None
                ) -> EngramState:
        self._check_input(input, (1, 2))
        batched = input.dim() == 2
        x = input if batched else input[None]  # (B, d)
        B = x.size(0)
        if hx is None:
            state = self._initial_layer_state(B, x)
        else:
            h, trace, key = _unpack_state(hx)
            per_sample = self.trace_mode == "per_sample"
            lead = (B,) if batched else ()  # the shapes as the caller passes them
            _check_state_shape("hx.h", h, (*lead, self.hidden_size), x.device)
            _check_state_shape("hx.trace", trace, (*(lead if per_sample else ()),
                                                   self.memory_size, self.hidden_size), x.device)
            if key is None:
                key = torch.zeros_like(h)
            _check_state_shape("hx.key", key, (*lead, self.hidden_size), x.device)
            if not batched:
                h, key = h[None], key[None]
                trace = trace[None] if per_sample else trace
            state = EngramState(h, trace, key)
        _, (h, trace, key), aux, _, path = self._run_layer(x[:, None], "", state)
        self.last_path = (path,)
        self._set_aux_loss([aux])
        if not batched:
            h, key = h[0], key[0]
            trace = trace[0] if self.trace_mode == "per_sample" else trace
        return EngramState(h, trace, key)


class Engram(_EngramBase):
    r"""The Engram Neural Network over whole sequences, like ``nn.LSTM``.

    Args (PyTorch's, same order and defaults):
        input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0
    ENN arguments (keyword-only; defaults are the paper's):
        memory_size (N=64): rows of the learnable memory bank M.
        hebbian_lr (eta=0.05), trace_scale (alpha=0.5), temperature (tau=1.5),
        sparsity (lambda=0.1; the softmax uses tau / (1 + 10 lambda)),
        trace_clip (0.1), trace_noise (std 0.001, added to the Hebbian write in training only),
        layer_norm_eps (1e-6).
        trace: ``"per_sample"`` (default: one N x h trace per sequence, batch-independent) or
            ``"shared"`` (the reference's single batch-mean trace).
        init_state: ``"zeros"`` (default) or ``"random"`` (the reference's fresh
            Normal(0, 0.01^2) draw of h_0 and H_0 at every call; training mode only, so that
            evaluation stays deterministic).
        top_k: hard top-k retrieval (other attention weights exactly 0, ties at the k-th
            score kept); None = dense.
        sparsity_penalty: weight of the mean attention entropy over the real steps; when > 0,
            every forward sets ``self.aux_loss`` to that weighted entropy (with several layers,
            the mean of the layers' terms), for the training loss.
        slot_diversity: weight of ln N minus the entropy of the attention's mean over the
            batch and steps (0 when every slot is used alike), added to ``self.aux_loss``:
            it spreads different inputs over different slots.
        Beyond the paper (docs/model.md, eqs. 10-12; the defaults are the paper's):
        trace_decay (None: 1 - hebbian_lr), write_key ("current", "previous", "mix"),
        address_trace (True), delta_rule (False), sharpness ("fixed", "layer", "slot"),
        neuromodulation (False), cosine_eps (0.0), hidden_update ("paper", "residual",
        "gated"); trace_clip=None removes the clip.
        The settings are readable as attributes (``rnn.hebbian_lr``); ``rnn.options()`` gives
        them as keyword arguments.

    ``forward(input, hx=None, lengths=None) -> (output, EngramState(h, trace, key))``:
        input (T, B, input_size), (B, T, input_size) if batch_first, (T, input_size)
        unbatched, or a PackedSequence. ``lengths`` (B,) marks padded steps, which change
        neither the state nor the real steps and output zeros (each length in [1, T],
        checked in eager mode only: under torch.compile a check of values would break the
        graph). h is (num_layers, B,
        hidden_size), trace (num_layers, B, N, hidden_size) per sample or (num_layers, N,
        hidden_size) shared, key (num_layers, B, hidden_size). ``hx`` may also be a pair
        (h, trace). ``forward_with_intermediates`` also returns :class:`EngramIntermediates`
        (attention (B, T, N), recall (B, T, h), the trace after each step).

    Parameters of layer k: ``weight_z_lk``, ``bias_z_lk``, ``ln_z_weight_lk``, ``ln_z_bias_lk``,
    ``memory_lk``, ``weight_c_lk``, ``bias_c_lk``, ``weight_o_lk``, ``bias_o_lk``,
    ``ln_h_weight_lk``, ``ln_h_bias_lk``; with the options, ``log_sharpness_lk`` (sharpness
    "layer" or "slot"), ``write_mix_lk`` (write_key "mix"), ``weight_mod_lk``, ``bias_mod_lk``
    (neuromodulation) and ``weight_g_lk``, ``bias_g_lk`` (hidden_update "gated").
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        *,
        device=None,
        dtype=None,
        **options,
    ) -> None:
        _check_option_names(type(self).__name__, options)
        super().__init__(input_size, hidden_size, bias, **options)
        if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
            raise ValueError(f"num_layers must be an integer >= 1, got {num_layers!r}")
        _check_range("dropout", dropout, 0.0, 1.0)
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout option adds dropout after all but last recurrent layer, so "
                          f"non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}", stacklevel=2)
        self.num_layers = num_layers
        self.batch_first = batch_first
        self.dropout = float(dropout)
        factory = {"device": device, "dtype": dtype}
        self._suffixes = [f"_l{k}" for k in range(num_layers)]  # per-layer parameter names
        for k, suffix in enumerate(self._suffixes):
            self._add_layer_params(suffix, input_size if k == 0 else hidden_size, factory)
        self.reset_parameters()

    def layer_weights(self, layer: int) -> EngramWeights:
        """The parameters of one layer, as the ops take them."""
        return self._layer_weights(f"_l{layer}")

    def layer_options(self, layer: int) -> OptionWeights:
        """The learnable tensors of one layer's memory options (None where an option is off),
        as the ops take them."""
        return self._layer_options(f"_l{layer}")

    def initial_state(self, batch_size: int, device=None) -> EngramState:
        """The state a forward without ``hx`` starts from, for ``batch_size`` sequences, with
        the layer dimension, on ``device`` (None: the layer's): zeros, or with
        ``init_state="random"`` in training mode a fresh Normal(0, 0.01^2) draw of h and trace
        (the key stays zero)."""
        like = torch.empty(0, device=self._bank().device if device is None else device)
        per_layer = [self._initial_layer_state(batch_size, like) for _ in range(self.num_layers)]
        return EngramState(*(torch.stack(s) for s in zip(*per_layer, strict=True)))

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: EngramState | tuple[Tensor, ...] | None = None,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor | PackedSequence, EngramState]:
        output, state, _ = self._forward(input, hx, lengths, record=False)
        return output, state

    def forward_with_intermediates(
        self,
        input: Tensor | PackedSequence,
        hx: EngramState | tuple[Tensor, ...] | None = None,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor | PackedSequence, EngramState, EngramIntermediates]:
        """``forward``, and what the memory did at every step: :class:`EngramIntermediates`
        of the top layer, whose ``layers`` holds every layer's, bottom first. It runs the
        memory on the PyTorch path (the only one that keeps every step's trace)."""
        return self._forward(input, hx, lengths, record=True)

    def _forward(self, input, hx, lengths, record: bool):
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("lengths must be None for a PackedSequence input "
                                 "(the packed sequence carries its own)")
            x, lengths = pad_packed_sequence(input, batch_first=True)  # (B, T, d)
            self._check_input(x, (2, 3))
            batched = True
        else:
            self._check_input(input, (2, 3))
            batched = input.dim() == 3
            if not batched:
                x = input[None]  # (1, T, d)
            elif self.batch_first:
                x = input  # (B, T, d)
            else:
                x = input.transpose(0, 1)  # (B, T, d)
        B, T, _ = x.shape
        if T == 0:
            raise ValueError("Engram: expected a non-empty sequence, got length 0")
        if B == 0:
            raise ValueError("Engram: expected a non-empty batch, got batch size 0")
        if lengths is not None:
            lengths = self._check_lengths(lengths, B, T, x.device)
        states = self._split_state(hx, B, batched, x)

        finals: list[EngramState] = []
        auxes: list[Tensor | None] = []
        records: list[EngramIntermediates] = []
        paths: list[str] = []
        layer_in = x
        for k in range(self.num_layers):
            if k > 0 and self.dropout > 0:
                layer_in = F.dropout(layer_in, self.dropout, self.training)
            layer_in, final, aux, recorded, path = self._run_layer(
                layer_in, f"_l{k}", states[k], lengths, record
            )
            paths.append(path)
            finals.append(final)
            auxes.append(aux)
            if recorded is not None:
                records.append(recorded)
        self._set_aux_loss(auxes)
        self.last_path = tuple(paths)

        h_n = _stack_layers([s.h for s in finals])  # (L, B, h)
        trace_n = _stack_layers([s.trace for s in finals])  # (L, B, N, h) or (L, N, h)
        key_n = _stack_layers([s.key for s in finals])  # (L, B, h)
        out = layer_in  # (B, T, h)
        if packed:  # as nn.LSTM: the input's batch_sizes and sorted / unsorted indices
            order = input.sorted_indices
            out = out if order is None else out.index_select(0, order)
            sorted_lengths = lengths.cpu() if order is None else lengths.cpu()[order.cpu()]
            data = pack_padded_sequence(out, sorted_lengths, batch_first=True).data
            output = PackedSequence(data, input.batch_sizes, order, input.unsorted_indices)
        elif batched:
            output = out if self.batch_first else out.transpose(0, 1)
        else:
            output = out[0]
            h_n, key_n = h_n[:, 0], key_n[:, 0]
            if self.trace_mode == "per_sample":
                trace_n = trace_n[:, 0]
        state = EngramState(h_n, trace_n, key_n)
        if record:
            return output, state, replace(records[-1], layers=tuple(records))
        return output, state, None

    def _check_lengths(self, lengths: Tensor, B: int, T: int, device) -> Tensor:
        lengths = torch.as_tensor(lengths)
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise TypeError(f"expected integer lengths, got {lengths.dtype}")
        if tuple(lengths.shape) != (B,):
            raise ValueError(f"expected lengths of shape ({B},), got {tuple(lengths.shape)}")
        # a check of the values would break torch.compile's graph: eager mode only
        if not torch.compiler.is_compiling() and bool(((lengths < 1) | (lengths > T)).any()):
            raise ValueError(f"expected every length in [1, {T}], got {lengths.tolist()}")
        return lengths.to(device=device, dtype=torch.long)  # int8/16 cannot index

    def _split_state(
        self, hx, B: int, batched: bool, like: Tensor
    ) -> list[EngramState | None]:
        """Per-layer states from ``hx`` (checked against the expected shapes), or the default:
        None for zeros (the fast path then skips the initial trace's terms)."""
        if hx is None:
            if self.init_state == "random" and self.training:
                return [self._initial_layer_state(B, like) for _ in range(self.num_layers)]
            return [None] * self.num_layers
        h, trace, key = _unpack_state(hx)
        L, hid, N = self.num_layers, self.hidden_size, self.memory_size
        per_sample = self.trace_mode == "per_sample"
        lead = (L, B) if batched else (L,)  # the shapes as the caller passes them
        _check_state_shape("hx.h", h, (*lead, hid), like.device)
        _check_state_shape("hx.trace", trace, (*(lead if per_sample else (L,)), N, hid),
                           like.device)
        if key is None:
            key = torch.zeros_like(h)
        _check_state_shape("hx.key", key, (*lead, hid), like.device)
        if not batched:
            h, key = h[:, None], key[:, None]
            if per_sample:
                trace = trace[:, None]
        return [EngramState(h[k], trace[k], key[k]) for k in range(L)]
