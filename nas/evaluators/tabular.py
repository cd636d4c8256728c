"""The `tabular` evaluator: ground-truth accuracy looked up in the shipped benchmark tables.

    nas search --space nats_sss --evaluator tabular --target pixel1 --trials 100
    nas search --space nb201 -o candidates=naslib --evaluator tabular --evaluator-option dataset=cifar100 ...

- `nats_sss`: CIFAR-10 accuracy of all 32,768 archs (NATS-Bench), dataset `cifar10` only.
- `nasnet -o variant=darts`: NAS-Bench-301's CIFAR-10 accuracy of NASLib's 725 cells (the NB301
  protocol: the cell trained at 32 channels / 8 cells, whatever `channels`/`cells` the space has; the
  accuracy ranks cells). The search must stay inside them: `-o candidates=nb301` or a candidate file.
- `nb201`: NASLib's subset (NAS-Bench-Suite-Zero): validation accuracy per dataset `cifar10`,
  `cifar100` or `ImageNet16-120`. Only those archs have truth, so the space must be restricted to
  them (`-o candidates=naslib`, or a candidate file whose archs all have truth); anything else is a
  usage error at construction, and an arch without truth is an error, never a made-up value.

Metrics: `score` and `accuracy` (both the ground-truth accuracy in %), and `<dataset>_acc`.
"""
from __future__ import annotations

from typing import Any

from nas.core.arch import Arch
from nas.core.errors import NasError, UsageError
from nas.core.space import SearchSpace

#: space -> datasets with ground truth
DATASETS: dict[str, tuple[str, ...]] = {"nats_sss": ("cifar10",),
                                        "nb201": ("cifar10", "cifar100", "ImageNet16-120"),
                                        "nasnet": ("cifar10",)}
#: spaces whose truth covers a subset only: the named candidate list that holds it
SUBSET_LISTS: dict[str, str] = {"nb201": "naslib", "nasnet": "nb301"}


def truth_table(space_name: str, dataset: str) -> dict[str, float]:
    """Block string -> ground-truth accuracy (%) for `space_name` on `dataset`."""
    from search_spaces import bench_data
    if space_name not in DATASETS:
        raise UsageError(f"no ground truth for space {space_name!r}; the tabular evaluator covers: "
                         f"{', '.join(DATASETS)}")
    if dataset not in DATASETS[space_name]:
        raise UsageError(f"no {space_name} ground truth for dataset {dataset!r}; valid datasets: "
                         f"{', '.join(DATASETS[space_name])}")
    if space_name == "nats_sss":
        return bench_data.nats_sss_accuracy()
    if space_name == "nasnet":
        return {a: r.val_accuracy for a, r in bench_data.nb301_records().items()}
    return {a: r.val_accuracy for a, r in bench_data.nb201_records(dataset).items()}


class TabularEvaluator:
    """`Arch -> {score, accuracy, <dataset>_acc}` from a ground-truth table (exact lookup)."""

    def __init__(self, space: SearchSpace, dataset: str = "cifar10") -> None:
        self.space, self.dataset = space, dataset
        if space.name == "nasnet" and (space.options().get("variant"), space.options().get("blocks")) != ("darts", 4):
            raise UsageError(f"nasnet ground truth (NAS-Bench-301) covers the DARTS cells only: use -o variant=darts, "
                             f"got variant={space.options().get('variant')!r}")
        self.truth = truth_table(space.name, dataset)
        self._check_coverage()

    def _check_coverage(self) -> None:
        """Every arch the search can propose must have truth: nb201 and nasnet need a candidate list."""
        candidates = getattr(self.space, "_candidates", None)
        name = self.space.name
        if name not in SUBSET_LISTS:
            return
        if candidates is None:
            raise UsageError(f"{name} ground truth covers only {len(self.truth)} archs on {self.dataset}; restrict "
                             f"the search with -o candidates={SUBSET_LISTS[name]} (or a candidate file)")
        missing = [a for a in candidates.archs if self.space.format(a) not in self.truth]
        if missing:
            raise UsageError(f"candidate {self.space.format(missing[0])!r} (and {len(missing) - 1} more) has no "
                             f"{name} ground truth on {self.dataset}; candidates must be among the "
                             f"{SUBSET_LISTS[name]} archs")

    def __call__(self, arch: Arch) -> dict[str, float]:
        block = self.space.format(arch)
        if block not in self.truth:
            raise NasError(f"arch {block!r} has no {self.space.name} ground truth on {self.dataset} "
                           f"({len(self.truth)} archs have)")
        acc = float(self.truth[block])
        return {"score": acc, "accuracy": acc, f"{self.dataset}_acc": acc}


def make_tabular(space: SearchSpace, seed: int = 0, **options: Any) -> TabularEvaluator:
    valid = ("dataset",)
    bad = sorted(set(options) - set(valid))
    if bad:
        raise UsageError(f"tabular evaluator has no option {bad[0]!r}; valid options: {', '.join(valid)}")
    dataset = options.get("dataset", "cifar10")
    return TabularEvaluator(space, dataset=str(dataset) if dataset is not None else "cifar10")

