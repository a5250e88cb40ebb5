"""Training and inference speed of the ENN classifier against RNN baselines (``enn bench``).

    enn bench [options]            # from a checkout; or: python -m benchmarks.bench [options]

The models are those ``enn train`` builds (``enn.models``, the ``default`` classifier head).

Every model runs in the same process and the steps are interleaved (model A, B, C, A, B,
C, ...), so that load from other jobs hits all models alike; medians are reported, and each
model's ratio to the LSTM is the median of its steps over the LSTM step of the same round.
Memory: the activations autograd saves for the backward (distinct storages, through
saved-tensor hooks), and on CUDA the allocator's peak growth over one training step.

On glibc the command first makes the allocator keep freed memory in the process
(``keep_freed_memory``). By default glibc hands large freed blocks back to the system, and
the next step that needs them pays a page fault per 4 KiB, thousands a step, so that a
model's time would depend on what the model before it freed. ``--system-allocator`` keeps
glibc's defaults; the JSON records the median page faults per training step of every model
either way. The benchmark runs on Linux (it reads /proc/self).
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import resource
import statistics
import sys
import time
from argparse import RawDescriptionHelpFormatter
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from enn import Engram
from enn.analysis.metrics import find_engram
from enn.cli import CLIError, Parser, at_least
from enn.data.atomic import atomic_write_json
from enn.models import ModelConfig, build_model
from enn.models.build import DataShape
from enn.models.config import ASSOCIATIVE
from enn.ops.engram import encode, layer

CLASSES = 10
CPU = torch.device("cpu")
USUAL_PATHS = ("torch", "native")  # the scaling plots name any other path of the layer


# ENN variants whose passes run on set backends (memory, hidden; None: the layer chooses), to
# time each native kernel against the PyTorch path inside a whole training step:
# ``enn_per_sample:torch-hidden``
VARIANTS = {"torch-hidden": (None, "torch"), "torch-memory": ("torch", None),
            "torch": ("torch", "torch")}


def build(name: str, input_size: int, hidden: int, memory: int) -> nn.Module:
    """``enn_<trace>[:<variant>]``: the ENN classifier (one Engram layer of the paper's cell);
    ``enn_associative``: the same with the associative preset's layer; ``lstm``, ``gru``,
    ``rnn``: the paper's baselines, two stacked layers (hidden, hidden / 2)."""
    base, _, variant = name.partition(":")
    if base == "enn_associative":
        if VARIANTS.get(variant, (None,))[0]:  # its memory is not the paper's: no such path
            raise ValueError(f"{name}: the associative memory has no PyTorch-path variant; "
                             f"time {base}:torch-hidden instead")
        cfg = ModelConfig("engram", (hidden,), memory_size=memory, **ASSOCIATIVE)
    elif name.startswith("enn_"):
        trace = name[len("enn_"):].partition(":")[0]
        cfg = ModelConfig("engram", (hidden,), memory_size=memory, trace=trace)
    else:
        cfg = ModelConfig(name, (hidden, hidden // 2))
    return build_model(cfg, DataShape("classification", CLASSES, input_size))


@contextlib.contextmanager
def backends_of(name: str):
    """Inside: the ENN's passes run on the variant's backends, where it sets them."""
    variant = name.partition(":")[2]
    memory, hidden = VARIANTS[variant] if variant else (None, None)
    choose_memory, choose_hidden = layer.choose_backend, layer.hidden_backend
    if memory:
        layer.choose_backend = lambda *args, **kwargs: memory
    if hidden:
        layer.hidden_backend = lambda *args, **kwargs: hidden
    try:
        yield
    finally:
        layer.choose_backend, layer.hidden_backend = choose_memory, choose_hidden


def _since(start: float, device: torch.device) -> float:
    """Seconds since ``start``, once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process: every block comes from the heap (none
    gets a mapping of its own, which free would unmap) and the heap is never trimmed. True
    where it took effect (glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's malloc.h
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def _page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x, y) -> float:
    start = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return _since(start, x.device)


def _infer(model: nn.Module, x) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        model(x)
    return _since(start, x.device)


def make_inputs(batch: int, steps: int, input_size: int, device: torch.device):
    """A random batch (B, T, d) and its class labels (B,)."""
    x = torch.rand(batch, steps, input_size, device=device)  # (B, T, d)
    return x, torch.randint(0, CLASSES, (batch,), device=device)


def measure(names: list[str], batch: int, steps: int, input_size: int, hidden: int,
            memory: int, repeats: int, warmup: int, seed: int = 0,
            device: torch.device = CPU) -> dict[str, dict]:
    """Median train ms/step and inference sequences/s per model, interleaved."""
    torch.manual_seed(seed)
    models = {n: build(n, input_size, hidden, memory).to(device) for n in names}
    opts = {n: torch.optim.Adam(m.parameters(), lr=1e-3) for n, m in models.items()}
    x, y = make_inputs(batch, steps, input_size, device)
    train = {n: [] for n in names}
    faults = {n: [] for n in names}
    infer = {n: [] for n in names}
    paths: dict[str, tuple] = {}
    for i in range(warmup + repeats):
        for n, m in models.items():
            m.train()
            with backends_of(n):
                before = _page_faults()
                t = train_step(m, opts[n], x, y)
                faulted = _page_faults() - before
                if n.startswith("enn_"):
                    paths[n] = find_engram(m).last_path
                m.eval()
                ti = _infer(m, x)
            if i >= warmup:
                train[n].append(t)
                faults[n].append(faulted)
                infer[n].append(ti)
    return {
        n: {
            "train_ms": 1e3 * statistics.median(train[n]),
            "train_ms_all": [1e3 * t for t in train[n]],
            "page_faults_per_step": statistics.median(faults[n]),
            "infer_seq_per_s": batch / statistics.median(infer[n]),
            "path": "/".join(paths.get(n, ())),
        }
        for n in names
    }


def matmul_macs(batch: int, steps: int, input_size: int, hidden: int, memory: int
                ) -> dict[str, float]:
    """Multiply-adds of the matmuls in one training step: the forward, and twice that in the
    backward but for the products of the input, whose gradient nobody needs (once: their
    weights' gradient). The paper's cell with each trace, the ``associative`` preset's layer
    (per-sample trace) and the 2-layer LSTM."""
    h, n, tokens = hidden, memory, batch * steps

    def step(input_product: int, rest: int) -> float:
        return float(tokens * (2 * input_product + 3 * rest))

    # integrator (7) and output (8); the similarity (3) and the recall (6)
    cell = 3 * h * 3 * h + 3 * h * h + 2 * n * h
    # the gate (12) and the recall's second product (a H); the write address (10) is the
    # read address of the step before, so it adds no product
    associative = cell + 3 * h * h + n * h
    small = h // 2
    return {
        "enn_per_sample": step(input_size * h, cell),  # its write is an outer product
        "enn_shared": step(input_size * h, cell + n * h),  # the write (9): a batch product
        "enn_associative": step(input_size * h, associative),
        "lstm": step(4 * h * input_size, 4 * h * h + 4 * small * (h + small)),
    }


def gemm_rate(batch: int, steps: int, hidden: int, repeats: int = 9,
              device: torch.device = CPU) -> float:
    """Multiply-adds per second of this machine's largest ENN matmul, (T*B, 2h) x (2h, 3h)."""
    a = torch.randn(batch * steps, 2 * hidden, device=device)
    b = torch.randn(2 * hidden, 3 * hidden, device=device)
    times = []
    for _ in range(repeats + 2):
        start = time.perf_counter()
        a @ b
        times.append(_since(start, device))
    return a.shape[0] * a.shape[1] * b.shape[1] / statistics.median(times[2:])


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                      device: torch.device = CPU) -> dict[str, list[float]]:
    """Seconds of each function in each timed round, the functions called in turn (A, B, C,
    A, B, C, ...) so that load from other jobs hits them alike; the first ``warmup`` rounds
    are not timed."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            if device.type == "cuda":  # nothing queued before the clock starts
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(_since(start, device))
    return times


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                   device: torch.device = CPU) -> dict[str, float]:
    """Median ms of each function of ``interleaved_times``."""
    return {k: 1e3 * statistics.median(v)
            for k, v in interleaved_times(fns, repeats, warmup, device).items()}


def memory_step(weights, hyper, z: torch.Tensor, noise: torch.Tensor | None,
                backend: str, options=layer.NO_OPTIONS) -> Callable[[], None]:
    """Forward + backward of the memory pass on one backend, on detached encodings z."""

    def memory_pass() -> None:
        mem, trace_n = layer.memory_pass(z, weights.memory, hyper, noise, None, None, False,
                                         backend, options)
        (mem.recall.sum() + trace_n.sum()).backward()

    return memory_pass


def hidden_step(weights, hyper, z: torch.Tensor, m: torch.Tensor, backend: str,
                options=layer.NO_OPTIONS) -> Callable[[], None]:
    """Forward + backward of the hidden pass on one backend, given detached z and recalls m."""

    def hidden_pass() -> None:
        out, h_n = layer.hidden_pass(z, m, z.new_zeros(z.shape[0], z.shape[2]), weights,
                                     hyper.ln_eps, None, backend, hyper.hidden_update, options)
        (out.sum() + h_n.sum()).backward()

    return hidden_pass


def breakdown(kind: str, batch: int, steps: int, input_size: int, hidden: int, memory: int,
              repeats: int, warmup: int, device: torch.device = CPU) -> dict[str, float]:
    """Forward + backward ms of the parts of one Engram layer (median) on each backend that
    runs here, and of the whole LSTM training step, interleaved: ``kind`` is the paper's
    cell with a trace mode, or ``associative`` (the preset's layer). The parts run on
    detached inputs, train mode, with the layer's trace noise; its draw is timed too."""
    torch.manual_seed(0)
    layer_args = ASSOCIATIVE if kind == "associative" else {"trace": kind}
    engram = Engram(input_size, hidden, batch_first=True, memory_size=memory,
                    **layer_args).to(device)
    weights, hyper = engram.layer_weights(0), engram.hyper
    options = engram.layer_options(0)
    lstm = build("lstm", input_size, hidden, memory).to(device)
    opt = torch.optim.Adam(lstm.parameters(), lr=1e-3)
    x, y = make_inputs(batch, steps, input_size, device)
    shape, std = (steps, memory, hidden), engram.trace_noise
    noise = std * torch.randn(shape, device=device) if std else None  # (T, N, h)
    z = encode(x, weights, hyper.ln_eps).detach().requires_grad_()  # (B, T, h)
    m = torch.randn_like(z).requires_grad_()  # (B, T, h)
    # what the layer picks here (native on a CPU, Triton on CUDA), then the PyTorch path
    memory_backends = dict.fromkeys(
        [layer.layer_backend(z, hyper, noise, memory_size=memory), "torch"])
    hidden_backends = dict.fromkeys([layer.hidden_backend(z), "torch"])
    parts = {"encoder": lambda: encode(x, weights, hyper.ln_eps).sum().backward()}
    for backend in memory_backends:
        parts[f"memory pass ({backend})"] = memory_step(weights, hyper, z, noise, backend,
                                                        options)
    for backend in hidden_backends:
        parts[f"hidden pass ({backend})"] = hidden_step(weights, hyper, z, m, backend, options)
    if noise is not None:
        parts["trace noise"] = lambda: std * torch.randn(shape, device=device)
    parts["LSTM step"] = lambda: train_step(lstm, opt, x, y)
    return interleaved_ms(parts, repeats, warmup, device)


def peak_memory_mib(name: str, batch: int, steps: int, input_size: int, hidden: int,
                    memory: int, device: torch.device) -> float:
    """Peak memory growth over one training step on a CUDA device (MiB): the allocator's peak
    minus what was allocated before the step. (On a CPU the process keeps its freed memory,
    so that a step's growth says nothing; ``saved_activations_mib`` is what a step holds.)"""
    torch.manual_seed(0)
    model = build(name, input_size, hidden, memory).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = make_inputs(batch, steps, input_size, device)
    with backends_of(name):
        train_step(model, opt, x, y)  # Adam's state exists from here on
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        train_step(model, opt, x, y)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def saved_activations_mib(name: str, batch: int, steps: int, input_size: int, hidden: int,
                          memory: int, device: torch.device = CPU) -> float:
    """Bytes autograd keeps for the backward of one training forward (distinct storages)."""
    torch.manual_seed(0)
    model = build(name, input_size, hidden, memory).to(device).train()
    x, _ = make_inputs(batch, steps, input_size, device)
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), backends_of(name):
        model(x)
    return sum(seen.values()) / 2**20


def _table(rows: list[dict]) -> str:
    head = (f"{'model':<16}{'trace':<28}{'B x T x d':<14}{'h':>5}{'N':>5}{'train ms':>10}"
            f"{'x LSTM':>8}{'infer seq/s':>13}{'peak MiB':>10}{'saved MiB':>11}  path")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:<16}{r['trace']:<28}{r['shape']:<14}{r['hidden']:>5}{r['memory']:>5}"
            f"{r['train_ms']:>10.1f}{r['ratio_to_lstm_per_round']['median']:>8.2f}"
            f"{r['infer_seq_per_s']:>13.0f}"
            f"{'n/a' if r['peak_mib'] is None else format(r['peak_mib'], '.1f'):>10}"
            f"{'n/a' if r['saved_mib'] is None else format(r['saved_mib'], '.1f'):>11}"
            f"  {r['path']}"
        )
    return "\n".join(lines)


def round_ratios(times: list[float], base: list[float]) -> dict[str, float]:
    """Each timed step over the baseline's step of the same round (they ran seconds apart, so
    slow drifts of the machine's load cancel): median and quartiles."""
    ratios = [t / b for t, b in zip(times, base, strict=True)]
    if len(ratios) < 2:
        return {"q1": ratios[0], "median": ratios[0], "q3": ratios[0]}
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return {"q1": q1, "median": median, "q3": q3}


def kernel_gains(results: dict) -> dict[str, dict[str, float]]:
    """Each ``enn_<x>:<variant>`` step over the ``enn_<x>`` step of the same round."""
    return {name: round_ratios(r["train_ms_all"], results[name.partition(":")[0]]["train_ms_all"])
            for name, r in results.items() if ":" in name}


def _quartiles(q: dict[str, float]) -> str:
    return f"{q['median']:.2f} [{q['q1']:.2f}, {q['q3']:.2f}]"


def _rows(results: dict, args_shape: dict, with_memory: bool, device: torch.device
          ) -> list[dict]:
    lstm_steps = results["lstm"]["train_ms_all"]
    rows = []
    for name, r in results.items():
        enn = name.startswith("enn_")
        peak = (peak_memory_mib(name, **args_shape, device=device)
                if with_memory and device.type == "cuda" else None)
        saved = (saved_activations_mib(name, **args_shape, device=device) if with_memory
                 else None)  # JSON null: not measured
        rows.append({
            "model": "ENN" if enn else name.upper() + " (2 layers)",
            "trace": name[4:] if enn else "-",
            "shape": f"{args_shape['batch']}x{args_shape['steps']}x{args_shape['input_size']}",
            "hidden": args_shape["hidden"], "memory": args_shape["memory"] if enn else 0,
            "train_ms": r["train_ms"], "train_ms_all": r["train_ms_all"],
            "page_faults_per_step": r["page_faults_per_step"],
            "ratio_to_lstm_per_round": round_ratios(r["train_ms_all"], lstm_steps),
            "infer_seq_per_s": r["infer_seq_per_s"],
            "peak_mib": peak, "saved_mib": saved, "path": r["path"],
        })
    return rows


SWEEPS = {
    "steps": [28, 112, 392, 784],
    "memory": [16, 64, 256],
    "hidden": [64, 128, 256, 512],
    "batch": [16, 64, 128, 256],
}
CUDA_BATCHES = [128, 512, 1024, 2048, 4096]  # a GPU is sized for batches a CPU is not


def sweeps_for(device: torch.device) -> dict[str, list[int]]:
    return {**SWEEPS, "batch": CUDA_BATCHES} if device.type == "cuda" else SWEEPS


def scaling(base: dict, repeats: int, warmup: int, names: list[str], device: torch.device
            ) -> dict[str, list[dict]]:
    """Train ms/step while one of the shapes varies and the others keep their base values."""
    out: dict[str, list[dict]] = {}
    for key, values in sweeps_for(device).items():
        out[key] = []
        for v in values:
            shape = {**base, key: v}
            res = measure(names, repeats=repeats, warmup=warmup, device=device, **shape)
            out[key].append({"value": v, **{n: res[n]["train_ms"] for n in names},
                             "paths": {n: res[n]["path"] for n in names if res[n]["path"]}})
            print(f"  {key}={v}: " + ", ".join(f"{n} {res[n]['train_ms']:.1f} ms" for n in names),
                  flush=True)
    return out


def plot_scaling(sweeps: dict[str, list[dict]], names: list[str], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"steps": "sequence length T", "memory": "memory size N",
              "hidden": "hidden size h", "batch": "batch size B"}
    files = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for key, points in sweeps.items():
        fig, (ax, ax_ratio) = plt.subplots(1, 2, figsize=(9, 3.6))
        xs = [p["value"] for p in points]
        for n in names:
            ax.plot(xs, [p[n] for p in points], marker="o", label=n)
            if n != "lstm":
                ax_ratio.plot(xs, [p[n] / p["lstm"] for p in points], marker="o", label=n)
                for p in points:  # name the layer's path where it left its usual one
                    path = p.get("paths", {}).get(n, "native")
                    if path not in USUAL_PATHS:
                        ax_ratio.annotate(path, (p["value"], p[n] / p["lstm"]), fontsize=7,
                                          xytext=(4, 4), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_ylabel("train ms / step (median)")
        ax.set_title(f"training step vs {labels[key]}")
        ax_ratio.set_ylabel("median step / the LSTM's median step")
        ax_ratio.set_title("ratio to the 2-layer LSTM")
        ax_ratio.set_ylim(bottom=0)
        for a in (ax, ax_ratio):
            a.set_xscale("log", base=2)
            a.set_xlabel(labels[key])
            a.grid(True, which="both", alpha=0.3)
            a.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"scaling_{key}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise CLIError(f"--device: expected a torch device such as cpu or cuda, got {name!r}"
                       ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise CLIError(f"--device: expected cpu or cuda, got {name!r}")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise CLIError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                       "CUDA device(s)")
    return device


def _check_outputs(args) -> None:
    """Where the results go, checked before minutes of timing."""
    if args.plot_dir and not args.scaling:
        raise CLIError("--plot-dir draws the --scaling curves; give --scaling too")
    for option, folder in (("--out", args.out and Path(args.out).parent),
                           ("--plot-dir", args.plot_dir and Path(args.plot_dir))):
        if not folder:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CLIError(f"{option}: cannot create {folder} ({err.strerror})") from None
    if args.out and Path(args.out).is_dir():
        raise CLIError(f"--out: expected a file, got the folder {args.out}")
    if args.out:  # a file there can be written: found out now, not after the timing
        probe = Path(args.out).with_name(f".{Path(args.out).name}.probe")
        try:
            probe.touch()
            probe.unlink()
        except OSError as err:
            raise CLIError(f"--out: cannot write {args.out} ({err.strerror})") from None
    if args.plot_dir:
        try:
            import matplotlib  # noqa: F401
        except ModuleNotFoundError:
            raise CLIError("--plot-dir needs matplotlib, from the 'analysis' extra: "
                           "pip install 'engram-nn[analysis]'") from None


def main(argv: list[str] | None = None, prog: str = "enn bench") -> int:
    args = parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
    device = _device(args.device)
    _check_outputs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = not args.system_allocator and keep_freed_memory()
    allocator = "keeps freed memory" if kept else "system"
    names = [f"enn_{m}" for m in args.trace]
    if args.backends:
        names += [f"enn_{m}:{v}" for m in args.trace for v in VARIANTS]
    names += [f"enn_{p}" for p in args.presets]
    if args.backends:
        names += [f"enn_{p}:torch-hidden" for p in args.presets]
    names += ["lstm", *[b for b in args.baselines if b != "lstm"]]
    shape = {"batch": args.batch, "steps": args.steps, "input_size": args.input_size,
             "hidden": args.hidden, "memory": args.memory}
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else platform.processor() or platform.machine())
    print(f"enn bench: torch {torch.__version__}, {torch.get_num_threads()} threads, {where}, "
          f"allocator: {allocator}", flush=True)
    results = measure(names, repeats=args.repeats, warmup=args.warmup, device=device, **shape)
    rows = _rows(results, shape, with_memory=not args.no_memory, device=device)
    print(_table(rows))
    print("x LSTM per round (each step over the LSTM step of its round; median [quartiles]): "
          + ", ".join(f"{r['model']} {r['trace']} {_quartiles(r['ratio_to_lstm_per_round'])}"
                      for r in rows if r["trace"] != "-"))
    gains = kernel_gains(results)
    if gains:
        print("what the kernels buy, per round (the PyTorch-path variant's step over the "
              "layer's own; median [quartiles]): " + ", ".join(
                  f"{k} {_quartiles(v)}" for k, v in gains.items()))
    print("page faults per training step (median): " + ", ".join(
        f"{r['model']} {r['trace']} {r['page_faults_per_step']:.0f}" for r in rows))
    report = {"torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.machine(), "device": where, "allocator": allocator,
              "shape": shape,
              "repeats": args.repeats, "warmup": args.warmup, "rows": rows,
              "kernel_gains": gains}
    if args.breakdown:
        macs = matmul_macs(**shape)
        rate = gemm_rate(shape["batch"], shape["steps"], shape["hidden"], device=device)
        report["matmul"] = {f"{k}_gmac": v / 1e9 for k, v in macs.items()}
        report["matmul"]["gemm_gmac_per_s"] = rate / 1e9
        print("matmul work per training step (G MAC, x the LSTM's): " + ", ".join(
            f"{k.removeprefix('enn_')} {v / 1e9:.2f} ({v / macs['lstm']:.2f}x)"
            for k, v in macs.items()) + f"; this machine's GEMM: {rate / 1e9:.0f} G MAC/s")
        report["breakdown"] = {}
        for mode in [*args.trace, *args.presets]:
            parts = breakdown(mode, repeats=args.repeats, warmup=args.warmup, device=device,
                              **shape)
            report["breakdown"][mode] = parts
            print(f"breakdown, {mode} (forward + backward ms, median; x LSTM step): " + ", ".join(
                f"{k} {v:.1f} ({v / parts['LSTM step']:.2f})" for k, v in parts.items()))
    if args.scaling:
        sweep_names = [f"enn_{m}" for m in args.trace] + ["lstm"]
        print("scaling (train ms/step, median):", flush=True)
        report["scaling"] = scaling(shape, args.scaling_repeats, args.warmup, sweep_names,
                                    device)
        report["scaling_repeats"] = args.scaling_repeats
        if args.plot_dir:
            files = plot_scaling(report["scaling"], sweep_names, Path(args.plot_dir))
            print("plots: " + ", ".join(str(f) for f in files))
    if args.out:
        atomic_write_json(args.out, report, sort_keys=False)
        print(f"wrote {args.out}")
    return 0


def parser(prog: str) -> Parser:
    p = Parser(prog=prog, description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=at_least(1), default=128)
    p.add_argument("--steps", type=at_least(1), default=28, help="sequence length T")
    p.add_argument("--input-size", type=at_least(1), default=28)
    p.add_argument("--hidden", type=at_least(1), default=128)
    p.add_argument("--memory", type=at_least(1), default=64, help="memory size N")
    p.add_argument("--trace", nargs="+", default=["per_sample", "shared"],
                   choices=["per_sample", "shared"])
    p.add_argument("--presets", nargs="*", default=[], choices=["associative"],
                   help="also time the ENN with this preset's layer (one per-sample layer)")
    p.add_argument("--baselines", nargs="*", default=["lstm", "gru", "rnn"],
                   choices=["lstm", "gru", "rnn"], help="the LSTM always runs (the ratio's base)")
    p.add_argument("--repeats", type=at_least(1), default=7, help="timed steps per model (median)")
    p.add_argument("--warmup", type=at_least(0), default=2)
    p.add_argument("--threads", type=at_least(0), default=0,
                   help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:index]")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the peak-memory and saved-activation measurements")
    p.add_argument("--system-allocator", action="store_true",
                   help="keep glibc's default of handing freed memory back (page faults)")
    p.add_argument("--backends", action="store_true",
                   help="also time each ENN with its memory pass on the PyTorch path (what "
                        "the native kernels buy inside a training step)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the Engram layer's parts against the LSTM step, and count "
                        "the matmul work")
    p.add_argument("--scaling", action="store_true",
                   help="also sweep T, N, h and B (one at a time) around the base shape")
    p.add_argument("--scaling-repeats", type=at_least(1), default=3)
    p.add_argument("--plot-dir", default=None, help="write the scaling curves as PNGs here")
    p.add_argument("--out", default=None, help="write the results as JSON to this file")
    return p


if __name__ == "__main__":
    try:
        sys.exit(main(prog="python -m benchmarks.bench"))
    except CLIError as err:
        print(f"python -m benchmarks.bench: error: {err}", file=sys.stderr)
        sys.exit(2)
