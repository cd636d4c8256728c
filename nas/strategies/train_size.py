"""At what size a weight-sharing strategy trains: the searched one when the data allows, else a proxy.

`train_size` (a strategy option of supernet, single-path, differentiable and darts):

* ``searched`` - the searched space itself (its resolution, width, channels, cells), with the
  dataset's number of classes: the inherited subnet files are then the net whose latency was
  predicted, classifier aside;
* ``proxy`` - a cheaper copy with the same decisions (the strategy's ``resolution``,
  ``width_mult`` / ``channels`` / ``cells`` and ``train_options``), as one-shot methods commonly
  train on CPU-sized proxies;
* ``auto`` - ``searched`` when the dataset's own images are at least the searched resolution
  (CIFAR-10 or synthetic at 32 px searched at 32, an image folder of 224 px images searched at 224)
  and no proxy-size option was given; otherwise ``proxy`` (digits are 8 px originals: upsampling
  them to 224 px would train a large net on no extra detail).

The choice and its reason go to best.json (``training.train_size``) and the search summary.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from nas.core.errors import UsageError
from nas.core.space import SearchSpace

TRAIN_SIZES = ("auto", "proxy", "searched")


def check_train_size(value: str) -> str:
    if value not in TRAIN_SIZES:
        raise UsageError(f"unknown train_size {value!r}; valid: {', '.join(TRAIN_SIZES)}")
    return value


def choose_train_space(space: SearchSpace, dataset: str, mode: str, proxy: Mapping[str, Any],
                       given: Sequence[str], classes: int, extra: Mapping[str, Any] | None = None
                       ) -> tuple[SearchSpace, dict[str, Any]]:
    """(training space, what was chosen and why). `proxy`: the proxy-size options; `given`: the
    names of those the user set (they ask for the proxy); `extra`: further proxy options
    (`train_options`)."""
    from nas.training.data import native_resolution
    from nas.supernet import training_space
    check_train_size(mode)
    searched_res = int(space.input_shape[-1])
    if mode == "searched" and given:
        raise UsageError(f"train_size=searched trains at the searched space's options; drop "
                         f"{', '.join(given)} (they set the proxy size) or use train_size=proxy")
    native = native_resolution(dataset)
    if mode == "auto" and given:
        used, why = "proxy", f"proxy-size options given ({', '.join(given)})"
    elif mode == "auto":
        used = "searched" if native >= searched_res else "proxy"
        why = (f"{dataset} images are {native} px, {'at least' if used == 'searched' else 'below'} the searched "
               f"resolution {searched_res} px")
    else:
        used, why = mode, f"train_size={mode} asked for"
    if used == "searched":
        small = training_space(space, num_classes=classes)
    else:
        small = training_space(space, **{**dict(proxy), "num_classes": classes, **dict(extra or {})})
    searched = space.options()
    differs = {k: {"trained": v, "searched": searched.get(k)} for k, v in small.options().items()
               if searched.get(k) != v and k != "num_classes"}
    return small, {"used": used, "asked": mode, "why": why, "data_resolution": native,
                   "searched_resolution": searched_res, "differs": differs}
