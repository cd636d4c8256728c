"""The evaluator interface: a callable `Arch -> metrics dict`, and the generic evaluators.

Latency is added by `LatencyEvaluator` from any number of targets; `Compose` merges several
evaluators' metrics. The named evaluators are listed in `nas.evaluators.catalog`.

An evaluator that can score only part of a space declares it as `valid_bounds`: metric
(`params_m`, `macs_m`, `peak_memory_mb`) -> the largest value it scores (e.g. the predictor: the
MACs range of its training rows). The search adds each as a constraint (the tighter of it and a
`--constraint` on the same metric), so strategies sample, repair and fill inside the range instead
of proposing archs the evaluator refuses.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

from nas.core.arch import Arch


class Evaluator(Protocol):
    def __call__(self, arch: Arch) -> dict[str, float]: ...


def valid_bounds(evaluator: Any) -> dict[str, float]:
    """The evaluator's declared `valid_bounds` (metric -> upper bound; empty when it declares none)."""
    got = getattr(evaluator, "valid_bounds", None)
    return {str(k): float(v) for k, v in got.items()} if isinstance(got, Mapping) else {}


class Compose:
    """Run evaluators in order and merge their metrics (later ones win on equal names)."""

    def __init__(self, evaluators: Sequence[Evaluator]) -> None:
        self.evaluators = list(evaluators)

    def __call__(self, arch: Arch) -> dict[str, float]:
        out: dict[str, float] = {}
        for ev in self.evaluators:
            out.update(ev(arch))
        return out


class LatencyEvaluator:
    """Predicted latency on each target: `latency_ms` (first target) and `latency_ms.<target>`."""

    def __init__(self, models: Mapping[str, Any]) -> None:
        self.models = dict(models)

    def __call__(self, arch: Arch) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, (name, model) in enumerate(self.models.items()):
            ms = float(model.predict(arch))
            out[f"latency_ms.{name}"] = ms
            if i == 0:
                out["latency_ms"] = ms
        return out


#: which of the search-wide training settings (--dataset, --epochs, --batch-size, --device) each
#: built-in evaluator takes as options; an evaluator not listed takes --dataset only
TRAINING_SETTINGS: dict[str, tuple[str, ...]] = {
    "train": ("dataset", "epochs", "batch_size", "device"),
    "zero-cost": ("dataset", "device"),
    "supernet": ("dataset", "batch_size", "device"),
}


def with_training_settings(name: str, options: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """`options` of evaluator `name` plus the search-wide `settings` given (`nas.pipeline.config.training_settings`);
    explicit options win. A setting the evaluator has no use for is a usage error."""
    from nas.core.errors import UsageError
    takes = TRAINING_SETTINGS.get(name, ("dataset",))
    unused = sorted(k for k in settings if k not in takes)
    if unused:
        flag = "--" + unused[0].replace("_", "-")
        raise UsageError(f"{flag} has no effect with evaluator {name!r} (it takes: "
                         f"{', '.join('--' + t.replace('_', '-') for t in takes)}); use --evaluator train, or a "
                         f"training strategy (supernet, single-path, darts)")
    return {**settings, **options}
