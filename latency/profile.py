"""Profiling: export each distinct layer to ONNX and time it with onnxruntime.

Settings are fixed and recorded (provider, threads, optimisation level, batch, warm-up, repeats,
statistic). The cost of one `InferenceSession.run` call on a trivial graph is measured too and
subtracted from every entry; the LUT model adds it back once per network, so that a sum of layers
does not count the per-call overhead once per layer.
"""
from __future__ import annotations

import datetime as _dt
import logging
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from latency.table import LatencyTable
from nas.core.layer import LayerSpec
from nas.core.space import SearchSpace

if TYPE_CHECKING:
    from latency.int8_context import LayerContext
    from latency.quantize import Quantizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfileSettings:
    provider: str = "CPUExecutionProvider"
    threads: int = 1
    opt_level: str = "all"
    batch: int = 1
    warmup: int = 10
    repeats: int = 50
    precision: str = "float32"   # or int8: each graph statically quantized (latency.quantize)

    def __post_init__(self) -> None:
        from latency.quantize import check_precision
        from nas.core.errors import UsageError
        check_precision(self.precision)
        for name in ("threads", "batch", "repeats"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be at least 0, got {self.warmup}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def accelerator_model(provider: str) -> str | None:
    """GPU name and driver for the CUDA / TensorRT providers (from nvidia-smi), else None."""
    if provider not in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        return None
    import subprocess
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown NVIDIA GPU (nvidia-smi not available)"
    name, _, driver = out.splitlines()[0].partition(",") if out else ("unknown", "", "")
    return f"{name.strip()} (driver {driver.strip()})" if driver else name.strip()


def device_metadata(settings: ProfileSettings, device: str | None = None) -> dict[str, Any]:
    import onnxruntime as ort
    accel = accelerator_model(settings.provider)
    return {"device": device or platform.node(), "cpu": cpu_model(), **({"gpu": accel} if accel else {}),
            "machine": platform.machine(),
            "os": platform.platform(), "runtime": "onnxruntime", "runtime_version": ort.__version__,
            **asdict(settings), "statistic": "median", "spread": "iqr",
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "source": "measured"}


def time_session(sess: Any, x: np.ndarray, warmup: int, repeats: int, clock: str = "wall") -> np.ndarray:
    """Times in ms of `repeats` runs after `warmup` runs, on the `clock` named (`latency.clocks`;
    the cpu clock is corrected for preemption)."""
    return time_interleaved([sess], [x], warmup, repeats, rounds=1, clock=clock, rewarm=0)[0]


def time_interleaved(sessions: Sequence[Any], inputs: Sequence[np.ndarray], warmup: int, repeats: int,
                     rounds: int = 5, progress: Any = None, clock: str = "wall", rewarm: int = 1,
                     switches: dict[str, Any] | None = None) -> list[np.ndarray]:
    """Time several sessions round-robin: `rounds` passes, each running every session
    `repeats // rounds` times. Slow drifts of the machine (frequency, noisy neighbours) then hit
    every session alike instead of whichever happened to be timed during them. `clock` is `wall`
    or `cpu` (CPU time of this thread; valid for one intra-op thread only), which ignores time the
    OS gives to other processes: long runs lose more to them than short ones. Under `cpu` the
    involuntary context switches of every run are counted and their cache-refill cost is taken
    out (`latency.clocks.correct`); what was removed goes into `switches` when given.
    `rewarm` untimed runs start each session's turn in every round: the first call after switching
    sessions finds cold caches, which a net's layers never do inside the net (and which would
    make every sample cold when repeats // rounds is 1)."""
    from latency.clocks import clock_function, correct, switch_counter
    now = clock_function(clock)
    count = switch_counter() if clock == "cpu" else None
    per_round = max(1, repeats // rounds)
    feeds = [{s.get_inputs()[0].name: x} for s, x in zip(sessions, inputs)]
    for s, f in zip(sessions, feeds):
        for _ in range(warmup):
            s.run(None, f)
    samples: list[list[float]] = [[] for _ in sessions]
    switched: list[list[int]] = [[] for _ in sessions]
    for _ in range(rounds):
        for i, (s, f) in enumerate(zip(sessions, feeds)):
            for _ in range(rewarm):
                s.run(None, f)
            for _ in range(per_round):
                k0 = count() if count else 0
                t0 = now()
                s.run(None, f)
                t1 = now()
                samples[i].append((t1 - t0) * 1e3)
                switched[i].append((count() - k0) if count else 0)
        if progress is not None:
            progress.update(1)
    times = [np.array(x) for x in samples]
    if count is None:
        return times
    fixed, report = correct(times, [np.array(k) for k in switched])
    if switches is not None:
        switches.update(report.to_dict(), raw_median_ms=[float(np.median(t)) for t in times])
    return fixed


def stats(times: np.ndarray) -> tuple[float, float]:
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return float(med), float(q3 - q1)


def measure_module(module: Any, input_shape: Sequence[int], settings: ProfileSettings,
                   workdir: str | Path | None = None, clock: str = "wall") -> tuple[float, float]:
    """Export `module` and time it end to end: (median ms, IQR ms)."""
    import torch

    from latency.onnx_io import export_onnx, session
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = export_onnx(module, torch.randn(settings.batch, *input_shape), Path(tmp) / "m.onnx")
        sess = session(path, settings.provider, settings.threads, settings.opt_level)
        x = np.random.default_rng(0).standard_normal((settings.batch, *input_shape)).astype(np.float32)
        return stats(time_session(sess, x, settings.warmup, settings.repeats, clock))


def call_overhead_ms(settings: ProfileSettings, clock: str = "wall") -> float:
    """Median time of a run call on a tiny graph (a 1x1 pooling of a 1x8x1x1 tensor)."""
    import torch
    return measure_module(torch.nn.AvgPool2d(1), (8, 1, 1), settings, clock=clock)[0]


#: layers timed together, round-robin, in one interleaved group of `profile_layers`
CHUNK = 128
#: round-robin passes over a group (each pass runs every layer repeats // ROUNDS times)
ROUNDS = 10


#: one whole net timed along with the layers: (key, module, input shape (C, H, W))
ContextNet = tuple[str, Any, Sequence[int]]


def profile_layers(specs: Sequence[LayerSpec], settings: ProfileSettings, table: LatencyTable,
                   out: str | Path | None = None, progress: bool = True,
                   on_entry: Callable[[str, float], None] | None = None,
                   chunk: int = CHUNK, rounds: int = ROUNDS, context: Sequence[ContextNet] = (),
                   quant: "Quantizer | None" = None, placement: "LayerContext | None" = None) -> LatencyTable:
    """Time every spec not already in `table`; save `table` to `out` after each group (resumable).

    Layers are timed in groups of `chunk`, round-robin (`time_interleaved`, `rounds` passes) with the
    empty-call graph and the `context` nets: a slow spell of the machine then hits every layer of the
    group a little instead of a few layers a lot, and the layers run among whole nets, as they do in
    a net and when `nas latency validate` checks them (layers timed among layers only read 5-15% fast
    and ranked the nets worse here: Spearman 0.46-0.93 against 0.92-0.98 in context). Each entry is
    the layer's median minus the empty call's median in the same group; each context net's median
    in each group goes to ``metadata["context_ms"][key]`` (for `latency.net_calibration`).
    `quant`: time every layer and context net as a statically quantized int8 graph; layers whose ops
    stayed partly in float (the quantizer's fallback) are listed in ``metadata["float_ops"]``; with
    `placement` (where the layers sit in the space's nets) each layer is timed as its in-net graph
    (`latency.int8_context`: uint8 in and out, no quantize / dequantize / layout change at its edges)."""
    import torch
    from tqdm import tqdm

    from latency.onnx_io import export_onnx, session
    from nas.core.ops import build_layer
    todo = list({s.key: s for s in specs if s.key not in table}.values())
    if not todo:   # a finished table: nothing to time, nothing to rewrite
        return table
    clock = str(table.metadata.setdefault("clock", "wall"))
    table.metadata.setdefault("call_overhead_ms", call_overhead_ms(settings, clock))
    rounds = max(1, min(rounds, settings.repeats))
    table.metadata["timing"] = (f"interleaved: groups of up to {chunk} layers with {len(context)} whole nets x "
                                f"{rounds} rounds")
    if len(todo) < len(specs):
        log.info("resuming: %d of %d layers already in the table", len(specs) - len(todo), len(specs))
    groups = [todo[i:i + chunk] for i in range(0, len(todo), max(1, chunk))]
    rng = np.random.default_rng(0)
    t_start = time.perf_counter()
    bar = tqdm(total=len(context) + len(todo) + len(groups) * rounds, desc="profiling layers", unit="step",
               disable=not progress)
    with bar, tempfile.TemporaryDirectory() as nets_dir:
        fallbacks = table.metadata.setdefault("float_ops", {}) if quant is not None else {}
        index = {s.key: j for j, s in enumerate(todo)}

        def layer_file(spec: LayerSpec, where: str) -> Path:
            path = export_onnx(build_layer(spec), torch.randn(settings.batch, *spec.input_shape),
                               Path(where) / f"layer{index[spec.key]}.onnx")
            bar.update(1)
            q = quantized(path, spec.input_shape, quant, f"layer {spec.key}", fallbacks, spec.key)
            if quant is None or placement is None:
                return q
            from latency.quantize import float_ops
            q = placement.graph(q, spec)   # the ops left in float are those of the graph as in a net
            left = float_ops(q)            # (a ReLU join: float alone, a requantization in a net)
            if left:
                fallbacks[spec.key] = left
            else:
                fallbacks.pop(spec.key, None)
            return q
        # int8: quantize every layer before timing any, so that a layer it refuses leaves no table behind
        ready = {s.key: layer_file(s, nets_dir) for s in todo} if quant is not None else {}
        net_paths = []
        for j, (key, module, shape) in enumerate(context):
            path = export_onnx(module, torch.randn(settings.batch, *shape), Path(nets_dir) / f"net{j}.onnx")
            net_paths.append(quantized(path, shape, quant, f"calibration net {key}", {}))
            bar.update(1)
        for group in groups:
            with tempfile.TemporaryDirectory() as tmp:
                paths = [export_onnx(torch.nn.AvgPool2d(1), torch.randn(settings.batch, 8, 1, 1), Path(tmp) / "ovh.onnx")]
                paths += [ready[s.key] if s.key in ready else layer_file(s, tmp) for s in group]
                sessions = [session(p, settings.provider, settings.threads, settings.opt_level)
                            for p in paths + net_paths]
                inputs = [rng.standard_normal((settings.batch, *shape)).astype(np.float32)
                          for shape in [(8, 1, 1)] + [s.input_shape for s in group] + [c[2] for c in context]]
                if quant is not None and placement is not None:   # in-net layer graphs take uint8 (NHWC)
                    from latency.int8_context import feed
                    inputs[1:1 + len(group)] = [feed(sess, rng) for sess in sessions[1:1 + len(group)]]
                times = time_interleaved(sessions, inputs, settings.warmup, settings.repeats, rounds,
                                         progress=bar, clock=clock)
                del sessions
            ovh = stats(times[0])[0]
            for spec, t in zip(group, times[1:1 + len(group)]):
                med, iqr = stats(t)
                table.add(spec.key, max(0.0, med - ovh), raw_ms=med, iqr_ms=iqr)
                if on_entry:
                    on_entry(spec.key, med)
            ctx = table.metadata.setdefault("context_ms", {})
            for (key, _, _), t in zip(context, times[1 + len(group):]):
                ctx.setdefault(key, []).append(round(stats(t)[0], 6))
            if out is not None:
                table.save(out)
    table.metadata["profile_seconds"] = round(float(table.metadata.get("profile_seconds", 0.0))
                                              + time.perf_counter() - t_start, 2)
    if out is not None:
        table.save(out)
    return table


def quantized(path: Path, shape: Sequence[int], quant: "Quantizer | None", label: str,
              fallbacks: dict[str, list[str]], key: str | None = None) -> Path:
    """`path` itself (float), or its int8 graph; ops left in float go to `fallbacks[key or label]`."""
    if quant is None:
        return path
    out, left = quant.quantize(path, shape, label)
    if left:
        fallbacks[key or label] = left
    return out


def resolve_clock(clock: str, settings: ProfileSettings) -> tuple[str, str | None]:
    """`wall`, `cpu` or `auto` (cpu when the machine is busy and threads == 1) -> the clock to use and
    a note for the user (a switch made or a recommendation), checked against the settings."""
    from latency.clocks import CLOCK_NAMES
    from latency.contention import choose_clock, current_load
    from nas.core.errors import UsageError
    if clock not in (*CLOCK_NAMES, "auto"):
        raise UsageError(f"unknown clock {clock!r}; valid: {', '.join([*CLOCK_NAMES, 'auto'])}")
    chosen, note = choose_clock(clock, current_load(settings.threads), settings.threads)
    if chosen == "cpu" and settings.threads != 1:
        raise UsageError(f"--clock cpu times the calling thread only, so it needs threads=1, not {settings.threads}")
    return chosen, note


def profile_space(space: SearchSpace, out: str | Path | None, settings: ProfileSettings,
                  device: str | None = None, progress: bool = True, clock: str = "wall",
                  context: Sequence[ContextNet] = (), quant: "Quantizer | None" = None) -> LatencyTable:
    """Build (or resume) the table of every distinct layer of `space` on this machine, timed on
    `clock` (wall, cpu or auto; recorded in the metadata, and a resumed table keeps its own), among
    the `context` nets (`profile_layers`); int8 settings need `quant`, whose description (format,
    calibration) the table records."""
    from nas.core.errors import LatencyError, UsageError
    if (settings.precision == "int8") != (quant is not None):
        raise UsageError(f"precision {settings.precision} needs {'a' if quant is None else 'no'} quantizer")
    meta = device_metadata(settings, device)
    if quant is not None:
        from latency.int8_context import BOUNDARIES
        meta["quantization"] = {**quant.describe(), "boundaries": BOUNDARIES}
        meta["graph"] = "exported"   # layers timed as in the exported graph: priced over space.graph_layers
    table = None
    if out is not None and Path(out).exists():
        table = LatencyTable.load(out)
        table.check_space(space.name, space.options())
        old = {k: table.metadata.get(k, ProfileSettings.precision if k == "precision" else None) for k in asdict(settings)}
        if old != asdict(settings):
            raise LatencyError(f"{out} was profiled with settings {old}, not {asdict(settings)}; "
                               f"use another --out or the same settings to resume")
        if quant is not None and table.metadata.get("quantization") != meta["quantization"]:
            raise LatencyError(f"{out} was quantized as {table.metadata.get('quantization')}, not "
                               f"{meta['quantization']}; use another --out or the same --dataset to resume")
    if table is None:
        chosen, note = resolve_clock(clock, settings)
        if note:
            log.warning(note)
        from latency.contention import current_load
        load = current_load(settings.threads)
        table = LatencyTable(space.name, space.options(), {**meta, "clock": chosen,
                                                            "load_at_start": load.describe() if load else None,
                                                            "busy_at_start": load.busy if load else None})
    elif clock != "auto" and clock != table.metadata.get("clock", "wall"):
        raise LatencyError(f"{out} was profiled with the {table.metadata.get('clock', 'wall')} clock, not {clock}; "
                           f"use another --out or the same clock to resume")
    timed_before = len(table.entries) if "load_at_end" in table.metadata else -1
    specs = space.all_layers()
    joins = space.all_join_layers() if quant is not None else []
    if joins:   # int8: node sums and zero edges are requantizing kernels, priced as layers (model.layer_list)
        specs += joins
        table.metadata["joins"] = "node sums and zero edges timed as layers (space.join_layers)"
    from latency.int8_context import LayerContext
    table = profile_layers(specs, settings, table, out, progress, context=context, quant=quant,
                           placement=LayerContext.of(space) if quant is not None else None)
    if len(table.entries) == timed_before:
        return table   # a finished table: nothing timed, nothing rewritten
    from latency.contention import current_load
    load = current_load(settings.threads)
    table.metadata["load_at_end"] = load.describe() if load else None
    table.metadata["busy_at_end"] = load.busy if load else None   # latency.host_check re-times a busy one
    if out is not None:
        table.save(out)
    return table
