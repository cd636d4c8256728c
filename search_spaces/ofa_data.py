"""Reader of the shipped Once-for-All MobileNetV3 ImageNet ground truth (`data/ofa_mbv3/`).

2,373 rows (DyNAS-T's searches over OFA-MobileNetV3 w1.0, IntelLabs/DyNAS-T, Apache 2.0; see
data/README.md): OFA's encoding `ks` (20 kernels), `e` (20 expansions), `d` (5 depths), `r` (input
resolution, 224 in every row), with `params`, `macs` and `top1` (ImageNet top-1 %, weights
inherited from the supernet, no fine-tuning), and the DyNAS-T search (`source`) that produced it.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from nas.core.errors import NasError
from nas.core.files import read_gzip_text

DATA = Path(__file__).parent / "data" / "ofa_mbv3" / "imagenet_top1.csv.gz"
COLUMNS = ("source", "ks", "e", "d", "r", "params", "macs", "top1")


@dataclass(frozen=True)
class OFARow:
    source: str
    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int
    params: int
    macs: int
    top1: float


@cache
def ofa_rows() -> tuple[OFARow, ...]:
    """Every row of the shipped CSV, in file order (read once)."""
    text = read_gzip_text(DATA, "benchmark data")
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise NasError(f"{DATA}: columns {reader.fieldnames}, expected {list(COLUMNS)}")
    rows = []
    try:
        for rec in reader:
            rows.append(OFARow(rec["source"], tuple(map(int, rec["ks"].split())), tuple(map(int, rec["e"].split())),
                               tuple(map(int, rec["d"].split())), int(rec["r"]), int(rec["params"]),
                               int(rec["macs"]), float(rec["top1"])))
    except (ValueError, TypeError) as exc:
        raise NasError(f"{DATA}: corrupt row {len(rows) + 2}: {exc}") from None
    return tuple(rows)
