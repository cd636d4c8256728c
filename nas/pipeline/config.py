"""`SearchConfig`: every setting of a search as data, its checks, and how a stored search is resumed.

The CLI builds one from its flags; Python users build one directly (`nas.SearchConfig(...)`). A search
stores the settings that define it (`config_dict`) beside its trials; resuming reloads them
(`resume_config`) and only RUN_SETTINGS may differ.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nas.core.errors import UsageError


@dataclass(frozen=True)
class SearchConfig:
    space: str = "mbconv"
    space_options: dict[str, Any] = field(default_factory=dict)
    targets: tuple[str, ...] = ("pixel1",)
    latency_ms: tuple[float, ...] = ()       # bounds, matched to targets in order
    strategy: str = "evolution"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    evaluator: str = "zero-cost"
    evaluator_options: dict[str, Any] = field(default_factory=dict)
    trials: int = 50
    seed: int = 0
    out: str | None = None
    resume: bool = True
    storage: str | None = None               # Optuna storage URL / journal:PATH / jsonl:PATH (default DIR/trials.db)
    study: str | None = None                 # study name (default: the --out folder's name)
    runner: str = "local"                    # local | ray
    workers: int | None = None               # Ray: evaluations in flight (default: the cluster's CPUs)
    address: str | None = None               # Ray: cluster address (default: start an embedded Ray)
    max_retries: int = 2                     # re-evaluations of a trial whose worker/process died
    heartbeat_s: float = 10.0                # shared studies: claim refresh period (dead after 3 missed + 5 s)
    store_params: bool = True                # decisions as Optuna params (dashboard plots; slower writes)
    dataset: str | None = None               # data of training-based steps / data-aware proxies (default digits)
    epochs: int | None = None                # training epochs (supernet, single-path, darts, train evaluator)
    batch_size: int | None = None
    device: str | None = None                # torch device for training and proxies: cpu (default) or cuda
    quantize_top: int = 0                    # re-score the top K finalists of --evaluator train after int8 PTQ
    constraints: tuple[str, ...] = ()        # --constraint METRIC<=VALUE, all must hold (nas/strategies/constraints.py)
    verify: str | None = None                # --verify cpu: export the best arch and time it on this machine


def training_settings(cfg: SearchConfig) -> dict[str, Any]:
    """The search-wide training settings given (not None)."""
    return {k: v for k, v in (("dataset", cfg.dataset), ("epochs", cfg.epochs), ("batch_size", cfg.batch_size),
                              ("device", cfg.device)) if v is not None}


#: settings that may change when a search is resumed (the rest must match the stored config)
RUN_SETTINGS = ("trials", "out", "resume", "storage", "study", "runner", "workers", "address", "max_retries",
                "store_params", "device", "heartbeat_s", "verify")
RUNNERS = ("local", "ray")


def check_config(cfg: SearchConfig) -> None:
    """Usage errors in the settings themselves (before anything is loaded)."""
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2 ** 32:
        raise UsageError(f"--seed must be an integer in [0, {2 ** 32 - 1}], got {str(cfg.seed)[:40]}")
    if cfg.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {cfg.trials}")
    if not cfg.targets:
        raise UsageError("at least one --target is needed")
    if cfg.runner not in RUNNERS:
        raise UsageError(f"unknown runner {cfg.runner!r}; valid runners: {', '.join(RUNNERS)}")
    if cfg.runner == "local" and (cfg.workers is not None or cfg.address):
        raise UsageError("--workers and --address are for --runner ray")
    from nas.training.threads import check_workers
    check_workers(cfg.workers, cfg.address)
    if not cfg.heartbeat_s > 0:
        raise UsageError(f"--heartbeat must be a positive number of seconds, got {cfg.heartbeat_s:g}")
    if cfg.max_retries < 0:
        raise UsageError(f"--max-retries must be at least 0, got {cfg.max_retries}")
    if isinstance(cfg.quantize_top, bool) or not isinstance(cfg.quantize_top, int) or cfg.quantize_top < 0:
        raise UsageError(f"--quantize-top must be a whole number >= 0, got {cfg.quantize_top!r}")
    if cfg.quantize_top and cfg.evaluator != "train":
        raise UsageError(f"--quantize-top re-trains and quantizes finalists: it needs --evaluator train, "
                         f"not {cfg.evaluator!r} (a {cfg.evaluator} score comes from no trained weights, so "
                         f"there is nothing to quantize)")
    for name in ("epochs", "batch_size"):
        value = getattr(cfg, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    if cfg.device is not None and cfg.device.split(":")[0] not in ("cpu", "cuda"):
        raise UsageError(f"--device {cfg.device!r} unknown; valid: cpu, cuda, cuda:N")
    if cfg.device is not None and cfg.device.startswith("cuda"):   # before any work (was an AssertionError after 47 s)
        from nas.training.distributed import check_device
        check_device(cfg.device)
    if cfg.out and Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise UsageError(f"--out {cfg.out} is a file; --out names the folder for best.json, trials.db and "
                         f"config.json")
    if cfg.storage is not None:
        check_storage(cfg.storage)
    if len(cfg.latency_ms) > len(cfg.targets):
        raise UsageError(f"{len(cfg.latency_ms)} latency bounds given for {len(cfg.targets)} targets")


#: JSON types of each stored setting (None allowed where the field's default is None)
_TYPES: dict[str, tuple[type, ...]] = {
    "space": (str,), "space_options": (dict,), "targets": (list, tuple), "latency_ms": (list, tuple),
    "strategy": (str,), "strategy_options": (dict,), "evaluator": (str,), "evaluator_options": (dict,),
    "trials": (int,), "seed": (int,), "out": (str,), "resume": (bool,), "storage": (str,), "study": (str,),
    "runner": (str,), "workers": (int,), "address": (str,), "max_retries": (int,), "store_params": (bool,),
    "dataset": (str,), "epochs": (int,), "batch_size": (int,), "device": (str,), "constraints": (list, tuple),
    "verify": (str,)}
_ITEM_TYPES: dict[str, tuple[type, ...]] = {"targets": (str,), "latency_ms": (int, float), "constraints": (str,)}


def _type_problem(key: str, value: Any) -> str | None:
    """Why `value` cannot be setting `key` (None when it can)."""
    default = {f.name: f.default for f in fields(SearchConfig)}.get(key)
    if value is None and default is None:
        return None
    kinds = _TYPES.get(key, (object,))
    want = " or ".join(k.__name__ for k in kinds)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        return f"{key!r} must be {want}, got {_short(value)}"
    items = _ITEM_TYPES.get(key)
    if items and any(not isinstance(v, items) or isinstance(v, bool) for v in value):
        return f"{key!r} must hold {' or '.join(k.__name__ for k in items)} values, got {_short(value)}"
    return None


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


#: the storage forms --storage takes (SQLAlchemy database URLs of these kinds, or files)
STORAGE_FORMS = ("sqlite:///PATH", "postgresql://USER@HOST/DB", "mysql://USER@HOST/DB", "journal:PATH", "jsonl:PATH")
_DIALECTS = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


def check_storage(spec: str) -> None:
    """Usage error unless `spec` has one of the STORAGE_FORMS (it is not opened here)."""
    scheme, sep, rest = spec.partition("://")
    if spec.startswith(("journal:", "jsonl:")):   # the store checks the path (e.g. that one is given)
        return
    if sep and rest and scheme.split("+")[0] in _DIALECTS:
        return
    raise UsageError(f"--storage {spec[:80]!r} is not a storage this tool knows; valid forms: "
                     f"{', '.join(STORAGE_FORMS)}")


def resume_config(folder: str | Path, overrides: dict[str, Any] | None = None) -> SearchConfig:
    """The config of the search in `folder` (its config.json), to continue it; `overrides` replace
    stored values (settings other than RUN_SETTINGS must still match, see `_check_resume`)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise UsageError(f"--resume {folder}: no config.json there; give the --out folder of a 'nas search'")
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise UsageError(f"--resume {folder}: cannot read {path} ({_short(str(exc), 120)})") from None
    if not isinstance(saved, dict):
        raise UsageError(f"--resume {folder}: {path} is not a search config (a JSON object)")
    names = {f.name for f in fields(SearchConfig)}
    data = {k: v for k, v in saved.items() if k in names}
    for key, value in data.items():
        problem = _type_problem(key, value)
        if problem:
            raise UsageError(f"--resume {folder}: {path} is not a valid search config ({problem})")
    recorded, asked = saved.get("study"), (overrides or {}).get("study")
    if asked is not None and recorded is not None and asked != recorded:
        raise UsageError(f"--resume {folder} continues study {recorded!r}; --study {asked!r} names another "
                         f"(drop --study, or start a new search with another --out)")
    changed = sorted(k for k, v in (overrides or {}).items() if k not in RUN_SETTINGS and k in data
                     and json.loads(json.dumps(v)) != json.loads(json.dumps(data[k])))
    if changed:
        diff = "; ".join(f"{k}: stored {_short(data[k], 40)}, given {_short(overrides[k], 40)}" for k in changed)
        raise UsageError(f"--resume {folder} holds a search with other settings ({', '.join(changed)}): {diff}; "
                         f"resume with the same settings, or start a new search with another --out")
    data.update(overrides or {})
    for key in ("targets", "latency_ms", "constraints"):
        if key in data:
            data[key] = tuple(data[key])
    data.update(out=str(folder), resume=True)
    try:
        return SearchConfig(**data)
    except TypeError as exc:
        raise UsageError(f"--resume {folder}: {path} is not a search config ({exc})") from None


def read_saved_config(path: Path) -> dict[str, Any]:
    """The config.json of an --out folder a search continues: a dict, or one UsageError line
    (a truncated file, a list, binary junk) naming it and the ways out."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise UsageError(f"--out {path.parent}: cannot read {path} ({_short(str(exc), 120)}); remove it, "
                         f"or use another --out, or --no-resume") from None
    if not isinstance(saved, dict):
        raise UsageError(f"--out {path.parent}: {path} is not a search config (a JSON object); remove it, "
                         f"or use another --out, or --no-resume")
    return saved


def config_dict(cfg: SearchConfig) -> dict[str, Any]:
    """The settings that define a search (JSON types), without the ones a resume may change."""
    # constraints: left out when none are given, so searches stored before --constraint existed resume
    return json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k not in RUN_SETTINGS
                                  and not (k == "constraints" and not v)}))


def study_name(cfg: SearchConfig) -> str:
    """--study, else the one recorded in DIR/config.json (survives renaming DIR), else DIR's name."""
    from nas.store.storage import default_study
    if cfg.study:
        return cfg.study
    path = Path(cfg.out) / "config.json" if cfg.out else None
    if path is not None and path.exists():
        try:
            recorded = json.loads(path.read_text()).get("study")
        except (json.JSONDecodeError, AttributeError):
            recorded = None
        if isinstance(recorded, str) and recorded:
            return recorded
    return default_study(cfg.out)
