"""Search results for people: the Pareto front (score vs latency) as a table, a plot and a report.

`nas report DIR` writes, beside the trials of the search in DIR:

    pareto.png    score vs latency of every finished trial, the front highlighted; one panel per
                  target of a multi-target search
    report.html   self-contained (the plot as inline SVG, no scripts, no network): settings,
                  counts, the Pareto front and the failed trials
    trials.csv    one row per trial: number, status, metrics, seconds, seed, arch, error

The front is one function (`pareto_front`) on one choice of axes (`latency_axes`): the score against the
latency on every target of the search (`latency_ms.<target>`, shown as `latency_ms[<target>]`), so the
summary `nas search` prints and `nas report` always show the same front. `--x METRIC` picks one axis.
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from nas.core.arch import Arch
from nas.core.errors import ArchError, UsageError
from nas.store.trial import Trial

ArchFormat = Callable[[Arch], str]


def _num(trial: Trial, metric: str) -> float:
    v = trial.metrics.get(metric)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def latency_axes(trials: Sequence[Trial], targets: Sequence[str] = ()) -> list[str]:
    """The x metrics of a search's front: `latency_ms.<target>` of each target when there are several
    (those the trials have), else `latency_ms` (the first target's)."""
    have = {k for t in trials for k in t.metrics}
    axes = [f"latency_ms.{t}" for t in dict.fromkeys(targets) if f"latency_ms.{t}" in have]
    return axes if len(axes) > 1 else ["latency_ms"]


def label(metric: str, targets: Sequence[str] = ()) -> str:
    """How a metric is shown: `latency_ms.pixel1` -> `latency_ms[pixel1]`; `latency_ms` names the first target."""
    if metric.startswith("latency_ms.") and metric != "latency_ms.":
        return f"latency_ms[{metric[len('latency_ms.'):]}]"
    if metric == "latency_ms" and targets:
        return f"latency_ms[{targets[0]}]"
    return metric


def _axes(x: str | Sequence[str]) -> list[str]:
    return [x] if isinstance(x, str) else list(x)


def pareto_front(trials: Sequence[Trial], x: str | Sequence[str] = "latency_ms", y: str = "score",
                 x_max: float | None = None) -> list[Trial]:
    """Finished trials no other trial beats on `y` (higher) and every metric of `x` (lower) at once, by
    increasing x; of trials equal on all of them, the first. Trials without finite values are left out;
    so are those with the first x above `x_max`."""
    xs = _axes(x)
    ok = [t for t in trials if t.ok and all(math.isfinite(_num(t, m)) for m in (*xs, y))
          and (x_max is None or _num(t, xs[0]) <= x_max)]
    ok.sort(key=lambda t: (*(_num(t, m) for m in xs), -_num(t, y), t.number))
    front: list[Trial] = []
    for t in ok:   # sorted: a trial can only be dominated by one before it
        if not any(_num(f, y) >= _num(t, y) and all(_num(f, m) <= _num(t, m) for m in xs) for f in front):
            front.append(t)
    return front


#: rows of the Pareto table, in the search summary and in `nas report` alike
PARETO_ROWS = 10


def pareto_table(trials: Sequence[Trial], x: str | Sequence[str] = "latency_ms", y: str = "score",
                 limit: int | None = None, fmt: ArchFormat | None = None, targets: Sequence[str] = ()) -> str:
    """The Pareto front as a plain-text table (best score last), one latency column per x metric."""
    xs = _axes(x)
    front = sorted(pareto_front(trials, xs, y), key=lambda t: (_num(t, y), -t.number))
    names = [label(m, targets) for m in xs]
    done = sum(t.ok for t in trials)
    head = f"Pareto front ({y} up, {' and '.join(names)} down): {len(front)} of {done} finished trials" + (
        f", {len(trials) - done} failed" if len(trials) > done else "")
    if not front:
        return head
    if limit is None or len(front) <= limit:
        rows = front
    else:   # evenly spaced along the front, both ends kept: the fastest arch as well as the best score
        rows = [front[round(i * (len(front) - 1) / (max(limit, 2) - 1))] for i in range(max(limit, 2))]
    widths = [max(10, len(n)) for n in names]
    lines = [head, f"  {'trial':>5}  {y:>10}  " + "  ".join(f"{n:>{w}}" for n, w in zip(names, widths))
             + f"  {'params_m':>8}  arch"]
    for t in rows:
        arch = fmt(t.arch) if fmt else t.arch.key
        lat = "  ".join(f"{_num(t, m):>{w}.3f}" for m, w in zip(xs, widths))
        lines.append(f"  {t.number:>5}  {_num(t, y):>10.4g}  {lat}  {_num(t, 'params_m'):>8.3f}  {arch}")
    if len(rows) < len(front):
        lines.insert(2, f"  ... {len(front) - len(rows)} of the front left out (evenly spaced rows shown, "
                        f"fastest to best)")
    return "\n".join(lines)


# ---- loading -------------------------------------------------------------------------------------
@dataclass
class SearchRecord:
    trials: list[Trial]
    config: dict[str, Any]
    source: str

    def targets(self) -> list[str]:
        """The search's targets, in order (from its config), or [] when it does not say."""
        got = self.config.get("targets")
        return [str(t) for t in got] if isinstance(got, list) else []

    def arch_format(self) -> ArchFormat:
        """Block strings when the space can be rebuilt from the config, else arch keys."""
        try:
            from search_spaces.catalog import get_space
            space = get_space(self.config["space"], **self.config.get("space_options", {}))
        except Exception:  # no or unknown space in the config: fall back to keys
            return lambda a: a.key

        def fmt(arch: Arch) -> str:
            try:
                return space.format(arch)
            except ArchError:
                return arch.key
        return fmt


def load_search(folder: str | Path | None, storage: str | None = None, study: str | None = None) -> SearchRecord:
    """The trials and config of a search: an --out folder, or a storage + study."""
    from nas.pipeline.config import SearchConfig, study_name
    from nas.store.study import open_store
    from nas.store.storage import STORE_FILE, default_spec
    config: dict[str, Any] = {}
    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise UsageError(f"{folder} is not a folder; give the --out folder of a 'nas search'")
        if (folder / "config.json").is_file():
            try:
                config = json.loads((folder / "config.json").read_text())
            except json.JSONDecodeError:
                config = {}
        storage = storage or (config.get("storage") if isinstance(config.get("storage"), str) else None)
        if storage is None and not (folder / STORE_FILE).exists() and not (folder / "trials.jsonl").exists():
            raise UsageError(f"{folder} holds no trials ({STORE_FILE} or trials.jsonl); give the --out folder of "
                             f"a 'nas search' or --storage")
    if storage is None and folder is None:
        raise UsageError("give a search folder or --storage (with --study)")
    spec = storage or default_spec(folder) or ""
    name = study or study_name(SearchConfig(out=str(folder) if folder is not None else None))
    store = open_store(spec, name, create=False)
    if not config and hasattr(store, "get_config"):
        config = store.get_config() or {}
    return SearchRecord(store.trials(), config if isinstance(config, dict) else {}, spec)


# ---- files ---------------------------------------------------------------------------------------
def write_csv(trials: Sequence[Trial], path: str | Path, fmt: ArchFormat | None = None) -> Path:
    path = Path(path)
    metrics = sorted({k for t in trials for k in t.metrics})
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["number", "status", *metrics, "seconds", "seed", "arch_key", "arch", "error"])
        for t in sorted(trials, key=lambda t: t.number):
            w.writerow([t.number, t.status, *(t.metrics.get(m, "") for m in metrics), f"{t.seconds:.6g}", t.seed,
                        t.arch.key, fmt(t.arch) if fmt else t.arch.to_json(),
                        (t.error or "").strip().splitlines()[0] if t.error else ""])
    return path


def plot(trials: Sequence[Trial], x: str | Sequence[str] = "latency_ms", y: str = "score",
         bounds: dict[str, float] | None = None, title: str = "", targets: Sequence[str] = ()) -> Any:
    """A matplotlib Figure (Agg): every finished trial and the Pareto front, one panel per x metric
    (each labelled with its target), with the latency bound of that metric."""
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, no display, no global state
    xs, bounds = _axes(x), bounds or {}
    fig = Figure(figsize=(7.5 if len(xs) == 1 else 5.0 * len(xs), 4.8), dpi=110)
    front = pareto_front(trials, xs, y)
    for i, m in enumerate(xs):
        ax = fig.add_subplot(1, len(xs), i + 1, sharey=fig.axes[0] if fig.axes else None)
        pts = [(_num(t, m), _num(t, y)) for t in trials if t.ok]
        pts = [(a, b) for a, b in pts if math.isfinite(a) and math.isfinite(b)]
        if pts:
            px, py = zip(*pts)
            ax.scatter(px, py, s=14, c="#9aa5b1", label=f"trials ({len(pts)})", zorder=2)
        if front:
            fx, fy = zip(*sorted((_num(t, m), _num(t, y)) for t in front))
            if len(xs) == 1:   # one axis: the front is a staircase; several: its points, projected
                ax.step(fx, fy, where="post", color="#d1495b", lw=1.5, zorder=3)
            ax.scatter(fx, fy, s=30, c="#d1495b", label=f"Pareto front ({len(front)})", zorder=4)
        if m in bounds:
            ax.axvline(bounds[m], color="#2e4057", ls="--", lw=1, label=f"bound {bounds[m]:g} ms")
        ax.set_xlabel(label(m, targets))
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
        if pts or m in bounds:
            ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title or f"{y} vs {' and '.join(label(m, targets) for m in xs)}", fontsize=10)
    fig.tight_layout()
    return fig


def write_report(folder: str | Path, record: SearchRecord, x: str | Sequence[str] | None = None,
                 y: str = "score", out: str | Path | None = None) -> dict[str, Any]:
    """Write pareto.png, report.html and trials.csv into `out` (default: the search folder). `x`: the
    metric(s) to minimise, by default the latency on every target (`latency_axes`)."""
    from nas.core.files import atomic_write_text
    out = Path(out or folder)
    out.mkdir(parents=True, exist_ok=True)
    cfg, trials = record.config, record.trials
    targets = record.targets()
    xs = latency_axes(trials, targets) if x is None else _axes(x)
    fmt = record.arch_format()
    bounds = _bounds(targets, cfg.get("latency_ms") or [])
    title = (f"{cfg.get('space', '?')} on {', '.join(targets or ['?'])}: "
             f"{y} vs {' and '.join(label(m, targets) for m in xs)}")
    fig = plot(trials, xs, y, bounds, title, targets)
    png = out / "pareto.png"
    fig.savefig(png)
    svg = io.StringIO()
    fig.savefig(svg, format="svg", metadata={"Date": None})
    csv_path = write_csv(trials, out / "trials.csv", fmt)
    front = sorted(pareto_front(trials, xs, y), key=lambda t: (_num(t, y), -t.number))
    html_path = out / "report.html"
    atomic_write_text(html_path, _html(cfg, trials, front, svg.getvalue(), fmt, xs, y, record.source, targets))
    return {"png": str(png), "html": str(html_path), "csv": str(csv_path), "trials": len(trials),
            "complete": sum(t.ok for t in trials), "failed": sum(not t.ok for t in trials),
            "x": xs, "x_labels": [label(m, targets) for m in xs],
            "pareto": [{"number": t.number, y: _num(t, y), **{m: _num(t, m) for m in xs}, "arch": fmt(t.arch)}
                       for t in front]}


def _bounds(targets: Sequence[str], latency_ms: Sequence[Any]) -> dict[str, float]:
    """x metric -> the --latency-ms bound on it (bounds are matched to the targets in order)."""
    out: dict[str, float] = {}
    for i, (t, b) in enumerate(zip(targets, latency_ms)):
        if isinstance(b, (int, float)) and not isinstance(b, bool):
            out[f"latency_ms.{t}"] = float(b)
            if i == 0:
                out["latency_ms"] = float(b)
    return out


def _html(cfg: dict[str, Any], trials: Sequence[Trial], front: Sequence[Trial], svg: str, fmt: ArchFormat,
          xs: Sequence[str], y: str, source: str, targets: Sequence[str] = ()) -> str:
    e = html.escape
    svg = svg[svg.find("<svg"):]  # drop the XML prolog and doctype: inline SVG in HTML5
    settings = "".join(f"<tr><th>{e(str(k))}</th><td>{e(json.dumps(v))}</td></tr>" for k, v in cfg.items())
    rows = "".join(f"<tr><td>{t.number}</td><td>{_num(t, y):.4g}</td>"
                   + "".join(f"<td>{_num(t, m):.3f}</td>" for m in xs)
                   + f"<td>{_num(t, 'params_m'):.3f}</td><td><code>{e(fmt(t.arch))}</code></td></tr>"
                   for t in reversed(front))
    names = [label(m, targets) for m in xs]
    x_heads = "".join(f"<th>{e(n)}</th>" for n in names)
    x = " and ".join(names)
    failed = [t for t in trials if not t.ok]
    fail_rows = "".join(f"<tr><td>{t.number}</td><td><code>{e(fmt(t.arch))}</code></td>"
                        f"<td><pre>{e((t.error or '').strip()[:2000])}</pre></td></tr>" for t in failed[:200])
    done = len(trials) - len(failed)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>nas search report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
code, pre {{ font-size: 0.85em; white-space: pre-wrap; margin: 0; }}
</style></head><body>
<h1>nas search report</h1>
<p>{len(trials)} trials: {done} finished, {len(failed)} failed. Trials from <code>{e(source)}</code>.</p>
<figure>{svg}</figure>
<h2>Pareto front ({e(y)} up, {e(x)} down), best {e(y)} first</h2>
<table><tr><th>trial</th><th>{e(y)}</th>{x_heads}<th>params_m</th><th>arch</th></tr>{rows}</table>
<h2>Settings</h2>
<table>{settings}</table>
<h2>Failed trials ({len(failed)})</h2>
<table><tr><th>trial</th><th>arch</th><th>error</th></tr>{fail_rows}</table>
</body></html>
"""
