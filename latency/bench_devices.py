"""The measured devices of NAS-Bench-201 (latency/data/nb201/latency_ms.csv.gz, see latency/data/README.md).

- `DEVICES` / `device(name)`: the 27 device columns (GPUs at three batch sizes, server CPUs, phones,
  Raspberry Pi 4, Eyeriss, FPGA) with their source and units.
- `nb201_latency()`: measured whole-net latency of all 15,625 archs on every device, keyed by the
  NAS-Bench-201 string; read once and cached; a missing or corrupt file raises `NasError` naming it.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from nas.core.files import read_gzip_text
from nas.core.errors import NasError, UnknownNameError

NB201_LATENCY = Path(__file__).parent / "data" / "nb201" / "latency_ms.csv.gz"

HW_NAS_BENCH = "HW-NAS-Bench (Li et al., ICLR 2021)"
HELP = "HELP (Lee et al., NeurIPS 2021)"


@dataclass(frozen=True)
class Device:
    """One measured device column of nb201/latency_ms.csv.gz."""

    name: str
    description: str
    kind: str          # gpu | cpu | phone | edge | asic | fpga
    batch: int
    source: str
    units: str = "ms"


def _devices() -> dict[str, Device]:
    out: dict[str, Device] = {}
    gpus = {"1080ti": "NVIDIA GTX 1080 Ti", "2080ti": "NVIDIA RTX 2080 Ti", "titan_rtx": "NVIDIA Titan RTX",
            "titanx": "NVIDIA Titan X", "titanxp": "NVIDIA Titan Xp"}
    for key, label in gpus.items():
        for batch in (1, 32, 256):
            out[f"{key}_{batch}"] = Device(f"{key}_{batch}", f"{label}, batch {batch}", "gpu", batch, HELP)
    cpus = {"gold_6226": "Intel Xeon Gold 6226", "gold_6240": "Intel Xeon Gold 6240",
            "silver_4114": "Intel Xeon Silver 4114", "silver_4210r": "Intel Xeon Silver 4210R"}
    for key, label in cpus.items():
        out[key] = Device(key, label, "cpu", 1, HELP)
    whole = "ms, whole milliseconds"
    out["pixel2"] = Device("pixel2", "Google Pixel 2", "phone", 1, HELP, whole)
    out["pixel3"] = Device("pixel3", "Google Pixel 3", "phone", 1, HW_NAS_BENCH)
    out["samsung_a50"] = Device("samsung_a50", "Samsung Galaxy A50", "phone", 1, HELP, whole)
    out["samsung_s7"] = Device("samsung_s7", "Samsung Galaxy S7", "phone", 1, HELP, whole)
    out["essential_ph_1"] = Device("essential_ph_1", "Essential Phone PH-1", "phone", 1, HELP, whole)
    out["raspi4"] = Device("raspi4", "Raspberry Pi 4", "edge", 1, HW_NAS_BENCH)
    out["eyeriss"] = Device("eyeriss", "Eyeriss (ASIC, simulated)", "asic", 1, HW_NAS_BENCH)
    out["fpga"] = Device("fpga", "FPGA (HW-NAS-Bench board)", "fpga", 1, HW_NAS_BENCH)
    return out


DEVICES: dict[str, Device] = _devices()


def device(name: str) -> Device:
    if name not in DEVICES:
        raise UnknownNameError("benchmark device", name, DEVICES)
    return DEVICES[name]


def _text(path: Path) -> str:
    return read_gzip_text(path, "benchmark data")


@dataclass(frozen=True)
class MeasuredLatency:
    """Whole-net latency per device: `ms[device][arch string]`, and the benchmark's index per arch."""

    ms: dict[str, dict[str, float]]
    index: dict[str, int]


@cache
def nb201_latency(path: Path = NB201_LATENCY) -> MeasuredLatency:
    rows = csv.reader(io.StringIO(_text(path)))
    header = next(rows, None)
    if not header or header[:2] != ["index", "arch"]:
        raise NasError(f"benchmark data {path} is corrupt: header must start with 'index,arch', got {header!r:.80}")
    names = header[2:]
    unknown = [n for n in names if n not in DEVICES]
    if unknown:
        raise NasError(f"benchmark data {path}: unknown device column {unknown[0]!r}; known: {', '.join(DEVICES)}")
    ms: dict[str, dict[str, float]] = {n: {} for n in names}
    index: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        try:
            if len(row) != len(header):
                raise ValueError(f"{len(row)} fields, expected {len(header)}")
            index[row[1]] = int(row[0])
            for n, v in zip(names, row[2:]):
                x = float(v)
                if not (math.isfinite(x) and x > 0):
                    raise ValueError(f"{n} latency {v!r} is not a positive number")
                ms[n][row[1]] = x
        except ValueError as exc:
            raise NasError(f"benchmark data {path} is corrupt at line {line}: {exc}") from None
    return MeasuredLatency(ms, index)
