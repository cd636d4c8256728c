"""The Python API: one function per `nas` subcommand, with the CLI's defaults and thread handling.

The CLI (nas/cli/main.py) only parses arguments, calls one of these and prints what it returns, so

    from nas import SearchConfig, search
    result = search(SearchConfig(space="mbconv", targets=("pixel1",), latency_ms=(80.0,), trials=50))

runs exactly what `nas search --space mbconv --target pixel1 --latency-ms 80` runs. Latency
functions are in `nas.api_latency`.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

from nas.core.errors import UsageError
from nas.pipeline.search import SearchResult
from nas.pipeline.config import SearchConfig, resume_config
from nas.pipeline.catalogue import SECTIONS, list_catalogue  # noqa: F401 (re-exported: the API)
from nas.training.threads import set_torch_threads

log = logging.getLogger(__name__)

__all__ = ["SearchConfig", "SearchResult", "search", "resume_config", "show", "export", "load_model", "train",
           "report", "list_catalogue", "predict_latency", "profile_latency", "set_torch_threads"]


def search(cfg: SearchConfig, progress: bool = True, torch_threads: int | None = None) -> SearchResult | None:
    """Run a search (see nas.pipeline.search). Fixes torch's CPU threads first, as the CLI
    does (`torch_threads`; default half the cores, at most 4). Under torchrun a weight-sharing
    strategy trains data parallel; the result is returned on rank 0 and None on the other ranks."""
    import nas.training.distributed as D
    from nas.pipeline.search import search as run_pipeline
    if cfg.runner == "ray" and _weight_sharing(cfg.strategy):
        return search_on_ray(cfg, progress, torch_threads)
    world = D.world_size()
    if world > 1:
        check_distributed_search(cfg, world)
    set_torch_threads(torch_threads)
    ctx = D.setup(cfg.device or "cpu") if world > 1 else None
    try:
        return run_pipeline(cfg, progress=progress and (ctx is None or ctx.is_main), dist=ctx)
    finally:
        if ctx is not None:
            D.teardown(ctx)


def _weight_sharing(strategy: str) -> bool:
    from nas.strategies.catalog import STRATEGIES
    return strategy in STRATEGIES.names() and STRATEGIES.get(strategy).weight_sharing


def search_on_ray(cfg: SearchConfig, progress: bool = True, torch_threads: int | None = None) -> SearchResult | None:
    """`--runner ray --workers N` with a weight-sharing strategy: the whole search runs as N Ray
    processes that train data parallel as N torchrun ranks would (nas.cluster.ray_train.run_on_ray);
    rank 0 then runs the trials in its process (scoring with inherited weights is cheap next to the
    training) and writes --out; its result comes back here."""
    from dataclasses import replace

    from nas.cluster.ray_train import run_on_ray
    from nas.pipeline.config import check_config
    from nas.training.threads import check_threads
    check_config(cfg)
    check_threads(torch_threads)
    if cfg.workers is None:
        raise UsageError(f"--strategy {cfg.strategy} --runner ray trains on --workers N processes: give --workers "
                         f"(e.g. --workers 2)")
    check_distributed_search(cfg, cfg.workers)
    if progress:
        log.info("training %s on %d Ray processes (data parallel; progress is not shown)", cfg.strategy, cfg.workers)
    local = replace(cfg, runner="local", workers=None, address=None)
    return run_on_ray(cfg.workers, cfg.address, "nas.api:search",   # type: ignore[no-any-return]
                      {"cfg": local, "progress": False, "torch_threads": torch_threads},
                      cuda=str(cfg.device or "cpu").startswith("cuda"))


def check_distributed_search(cfg: SearchConfig, world: int) -> None:
    """What torchrun can launch: a weight-sharing strategy, with a batch that splits evenly."""
    from nas.strategies.catalog import STRATEGIES
    if cfg.strategy in STRATEGIES and not STRATEGIES.get(cfg.strategy).weight_sharing:
        shared = sorted(n for n in STRATEGIES.names() if STRATEGIES.get(n).weight_sharing)
        raise UsageError(f"torchrun runs the training of a weight-sharing strategy ({', '.join(shared)}); "
                         f"--strategy {cfg.strategy} trains nothing - run it as one process (or --runner ray)")
    batch = cfg.strategy_options.get("batch_size") or cfg.batch_size or 64
    if not isinstance(batch, int) or batch % world:
        raise UsageError(f"batch size {batch} does not divide over {world} processes; use a multiple of {world}")


def show(space: str, arch: str, targets: Sequence[str] = (), space_options: Mapping[str, Any] | None = None
         ) -> dict[str, Any]:
    """Params, MACs, layer count and predicted latency on each target of one arch."""
    from latency.targets import lut_model
    from search_spaces.catalog import get_space
    sp = get_space(space, **dict(space_options or {}))
    a = sp.parse_any(arch)
    set_torch_threads(None)
    model = sp.build(a)
    params = sum(p.numel() for p in model.parameters())
    return {"space": sp.name, "arch": sp.format(a), "key": a.key, "params_m": params / 1e6,
            "macs_m": sp.macs(a) / 1e6, "layers": len(sp.layers(a)),
            "latency_ms": {t: lut_model(t, sp).predict(a) for t in targets}}


def export(result: str, fmt: str, out: str, seed: int = 0, batch: int | None = None,
           opset: int | None = None, precision: str = "float32", dataset: str | None = None,
           calibration_images: int = 128) -> dict[str, Any]:
    """Write a search result (best.json, random weights) or a trained model.pt (its weights) as ONNX
    (dynamic batch axis unless `batch`), torch, TorchScript or JSON. `precision` int8 (ONNX only):
    a statically quantized QDQ file, calibrated on `calibration_images` training images of `dataset`
    (default digits), with the held-out accuracy before and after quantization (the val split of
    `dataset` with split seed `seed`: the images `nas train --seed` held out)."""
    from latency.quantize import check_precision
    from nas.deploy.export import export as write
    set_torch_threads(None)
    if check_precision(precision) == "float32":
        if dataset is not None:
            raise UsageError("--dataset applies to --precision int8 only")
        return write(result, fmt, out, seed, batch=batch, opset=opset)
    if fmt != "onnx":
        raise UsageError(f"--precision int8 writes ONNX only, not --format {fmt}")
    return export_int8(result, out, dataset or "digits", seed, batch=batch, opset=opset,
                       calibration_images=calibration_images)


def export_int8(result: str, out: str, dataset: str = "digits", seed: int = 0, *, batch: int | None = None,
                opset: int | None = None, calibration_images: int = 128) -> dict[str, Any]:
    """`export(..., precision="int8")`: the int8 ONNX file of a model.pt / best.json and its accuracy cost."""
    from latency.quantize import Calibration
    from nas.deploy.export import load_source, resolve_out
    from nas.deploy.quantized import export_int8 as write_int8
    from nas.training.data import load_dataset
    if calibration_images < 1:
        raise UsageError(f"calibration images must be at least 1, got {calibration_images}")
    space, arch, state = load_source(result)
    res = int(space.input_shape[-1])
    x, _ = load_dataset(dataset, split="train", seed=seed, resolution=res, limit=calibration_images)
    vx, vy = load_dataset(dataset, split="val", seed=seed, resolution=res)
    info = write_int8(space, arch, resolve_out(out, "onnx"), Calibration(dataset, x.numpy()), vx.numpy(), vy.numpy(),
                      seed=seed, state=state, batch=batch, opset=opset)
    info.update(format="onnx", dataset=dataset, split_seed=seed,
                weights="from " + str(result) if state is not None else f"random (seed {seed})")
    return info


def load_model(path: str) -> Any:
    """The torch module (eval mode, trained weights) of a .pt written by `nas train` or `nas export`."""
    from nas.deploy.export import load_model as load
    return load(path)


def train(result: str | None = None, *, space: str | None = None, arch: str | None = None,
          space_options: Mapping[str, Any] | None = None, out: str | None = None, resume: bool = False,
          progress: bool = True, torch_threads: int | None = None, **config: Any) -> Any:
    """Train an arch from scratch (a best.json, a .pt to fine-tune, or `space` + `arch`) with the
    standard recipe (`config`: nas.training.retrain.TrainConfig fields); exports model.pt / model.onnx to `out`.
    Under torchrun, data parallel; returns the TrainResult on rank 0 and None on the others."""
    from nas.training.retrain import run_training
    return run_training(result, space=space, arch=arch, space_options=space_options, out=out, resume=resume,
                        progress=progress, torch_threads=torch_threads, **config)


def report(folder: str | None, storage: str | None = None, study: str | None = None, out: str | None = None,
           x: str | None = None, y: str = "score") -> tuple[dict[str, Any], Any]:
    """Pareto plot, HTML report and CSV of a search's trials; returns (info, the loaded search). `x`: the
    metric on the x axis; by default the latency on every target of the search (one panel each)."""
    from nas.pipeline.report import load_search, write_report
    if folder is None and storage is None:
        raise UsageError("give a search folder (the --out of 'nas search') or --storage with --study")
    record = load_search(folder, storage, study)
    present = sorted({k for t in record.trials if t.ok for k, v in t.metrics.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)})
    for flag, metric in (("--x", x), ("--y", y)):
        if present and metric is not None and metric not in present:
            raise UsageError(f"{flag} {metric!r}: no trial has that metric; metrics present: {', '.join(present)}")
    where = out or folder
    if where is None:
        raise UsageError("--storage without a search folder needs --out FOLDER for the report files")
    return write_report(where, record, x=x, y=y), record


def predict_latency(space: str, arch: str, targets: Sequence[str], breakdown: bool = False,
                    space_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    from nas.api_latency import predict
    return predict(space, arch, targets, breakdown, space_options)


def profile_latency(space: str, out: str, space_options: Mapping[str, Any] | None = None, **settings: Any) -> Any:
    from nas.api_latency import profile
    return profile(space, out, space_options, **settings)
