"""Readers of the benchmark ground truth shipped in `search_spaces/data/` (see its README.md); the
measured device latencies are read by `latency/bench_devices.py`.

- `nb201_records(dataset)`: NASLib's 725-arch subset: accuracy and zero-cost scores per arch.
- `nats_sss_accuracy()`: CIFAR-10 accuracy of all 32,768 NATS size-space archs.
- `nb301_records()`: NASLib's 725-cell subset of the DARTS space (NAS-Bench-301 protocol, CIFAR-10),
  keyed by `nasnet -o variant=darts` block strings (`nb301_key_to_string`).

Archs are keyed by their block strings (the NAS-Bench-201 string, `c1:c2:c3:c4:c5`). Files are read
once and cached; a missing or corrupt file raises `NasError` naming it.
"""
from __future__ import annotations

import ast
import csv
import io
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from nas.core.files import read_gzip_text
from nas.core.errors import NasError, UnknownNameError

DATA = Path(__file__).parent / "data"
NB201_ZC = DATA / "nb201" / "zc_nasbench201.json.gz"
NATS_SSS_ACC = DATA / "nats_sss" / "cifar10_accuracy.csv.gz"
NB301_ZC = DATA / "nb301" / "zc_nasbench301.json.gz"
#: NAS-Bench-301's op list (its genotype encoding; DARTS' PRIMITIVES without `none`), as our nasnet
#: tokens. Checked on all 725 cells: the params of the net built this way equal NASLib's `params`
#: score (tests/test_nb301.py); that separates every op but max3x3 from avg3x3 (neither has weights).
NB301_OPS: tuple[str, ...] = ("max3x3", "avg3x3", "id", "sep3x3", "sep5x5", "dil3x3", "dil5x5")
#: NAS-Bench-301's training protocol, as nasnet options: 32 channels, 8 cells (2 normal per stage), CIFAR-10
NB301_NET: dict[str, object] = {"variant": "darts", "channels": 32, "cells": 2, "num_classes": 10, "resolution": 32}
NB201_DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "ImageNet16-120")
#: NASLib's op order and edge order for its op-index keys (nodes numbered from 1)
NASLIB_OPS: tuple[str, ...] = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
NASLIB_EDGES: tuple[tuple[int, int], ...] = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))
ZC_PROXIES: tuple[str, ...] = ("flops", "params", "synflow", "grasp", "fisher", "grad_norm", "l2_norm", "plain",
                               "nwot", "epe_nas", "jacov", "snip")

def _text(path: Path) -> str:
    return read_gzip_text(path, "benchmark data")


def naslib_key_to_string(key: str) -> str:
    """NASLib op-index tuple text, e.g. '(4, 0, 3, 1, 4, 3)', -> the NAS-Bench-201 string."""
    try:
        codes = ast.literal_eval(key)
        ops = {edge: NASLIB_OPS[int(c)] for edge, c in zip(NASLIB_EDGES, codes, strict=True)}
    except (ValueError, SyntaxError, TypeError, IndexError) as exc:
        raise NasError(f"bad NASLib arch key {key!r} ({exc})") from None
    nodes = []
    for j in (2, 3, 4):
        nodes.append("|" + "|".join(f"{ops[(i, j)]}~{i - 1}" for i in range(1, j)) + "|")
    return "+".join(nodes)


@dataclass(frozen=True)
class ZCRecord:
    """One arch of NASLib's subset: validation accuracy (%) and the zero-cost scores NASLib computed."""

    arch: str
    val_accuracy: float
    scores: dict[str, float]


@cache
def _zc_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise NasError(f"benchmark data {path} is corrupt: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise NasError(f"benchmark data {path} is corrupt: expected an object of datasets")
    return data


@cache
def nb201_records(dataset: str, path: Path = NB201_ZC) -> dict[str, ZCRecord]:
    """NASLib's 725 archs of `dataset` (one of NB201_DATASETS), keyed by NAS-Bench-201 string."""
    if dataset not in NB201_DATASETS:
        raise UnknownNameError("nb201 dataset", dataset, NB201_DATASETS)
    data = _zc_json(path)
    if not isinstance(data.get(dataset), dict):
        raise NasError(f"benchmark data {path} has no dataset {dataset!r}")
    out: dict[str, ZCRecord] = {}
    for key, rec in data[dataset].items():
        try:
            scores = {p: float(rec[p]["score"]) for p in ZC_PROXIES if p in rec}
            out[naslib_key_to_string(key)] = ZCRecord(naslib_key_to_string(key), float(rec["val_accuracy"]), scores)
        except (KeyError, TypeError, ValueError) as exc:
            raise NasError(f"benchmark data {path}: record {key!r} of {dataset} is corrupt ({exc})") from None
    return out


@cache
def nats_sss_accuracy(path: Path = NATS_SSS_ACC) -> dict[str, float]:
    """CIFAR-10 accuracy (%) of every NATS size-space arch, keyed by 'c1:c2:c3:c4:c5'."""
    rows = csv.reader(io.StringIO(_text(path)))
    header = next(rows, None)
    if header != ["channels", "cifar10_accuracy"]:
        raise NasError(f"benchmark data {path} is corrupt: header {header!r:.80}, expected channels,cifar10_accuracy")
    out: dict[str, float] = {}
    for line, row in enumerate(rows, start=2):
        try:
            out[row[0]] = float(row[1])
        except (IndexError, ValueError):
            raise NasError(f"benchmark data {path} is corrupt at line {line}: {row!r:.80}") from None
    return out


def nb301_key_to_string(key: str) -> str:
    """NASLib's NB301 genotype text '[[(input, op) x 8], [(input, op) x 8]]' -> the block string of
    `nasnet -o variant=darts` (canonical form: pairs and nodes reordered as the space does)."""
    try:
        cells = ast.literal_eval(key)
        texts = []
        for label, cell in zip(("normal", "reduce"), cells, strict=True):
            if len(cell) != 8:
                raise ValueError(f"{label} cell has {len(cell)} (input, op) pairs, expected 8")
            pairs = [f"{NB301_OPS[int(op)]}({int(x)})" for x, op in cell]
            texts.append(f"{label}: " + " ".join(f"{pairs[i]}+{pairs[i + 1]}" for i in range(0, 8, 2)))
    except (ValueError, SyntaxError, TypeError, IndexError) as exc:
        raise NasError(f"bad NB301 arch key {key!r:.120} ({exc})") from None
    return _darts_space().format(_darts_space().parse(" || ".join(texts)))


@cache
def _darts_space() -> Any:
    from search_spaces.nasnet import NASNetSpace
    return NASNetSpace(variant="darts")


@cache
def nb301_records(path: Path = NB301_ZC) -> dict[str, ZCRecord]:
    """NASLib's 725 NB301 cells (CIFAR-10 accuracy, NASLib's 12 scores), keyed by nasnet block string."""
    data = _zc_json(path)
    if not isinstance(data.get("cifar10"), dict):
        raise NasError(f"benchmark data {path} has no dataset 'cifar10'")
    out: dict[str, ZCRecord] = {}
    for key, rec in data["cifar10"].items():
        try:
            block = nb301_key_to_string(key)
            scores = {p: float(rec[p]["score"]) for p in ZC_PROXIES if p in rec}
            out[block] = ZCRecord(block, float(rec["val_accuracy"]), scores)
        except (KeyError, TypeError, ValueError) as exc:
            raise NasError(f"benchmark data {path}: record {key!r:.120} is corrupt ({exc})") from None
    return out


def nb301_naslib_params(space: Any, arch: Any) -> int:
    """Parameters of `arch`'s net as NASLib counts them for its NB301 `params` score: NASLib builds the
    cell ops with BatchNorm affine=False, so BN weights inside the ops do not count (stem,
    preprocessing and head keep theirs). Built on the meta device: shapes only, no memory, no init."""
    import torch
    import torch.nn as nn
    with torch.device("meta"):
        net = space.build(arch)
    total = sum(p.numel() for p in net.parameters())
    for name, m in net.named_modules():
        if isinstance(m, nn.BatchNorm2d) and ".ops." in name:
            total -= sum(p.numel() for p in m.parameters())
    return int(total)
