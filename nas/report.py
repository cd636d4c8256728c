"""Search results for people: the Pareto front (score vs latency) as a table, a plot and a report.

`nas report DIR` writes, beside the trials of the search in DIR:

    pareto.png    score vs latency_ms of every finished trial, the front highlighted
    report.html   self-contained (the plot as inline SVG, no scripts, no network): settings,
                  counts, the Pareto front and the failed trials
    trials.csv    one row per trial: number, status, metrics, seconds, seed, arch, error
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
from nas.trial import Trial

ArchFormat = Callable[[Arch], str]


def _num(trial: Trial, metric: str) -> float:
    v = trial.metrics.get(metric)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def pareto_front(trials: Sequence[Trial], x: str = "latency_ms", y: str = "score",
                 x_max: float | None = None) -> list[Trial]:
    """Finished trials no other trial beats on both `y` (higher) and `x` (lower), by increasing x.
    Trials without finite values of both are left out; so are those with x above `x_max`."""
    ok = [t for t in trials if t.ok and math.isfinite(_num(t, x)) and math.isfinite(_num(t, y))
          and (x_max is None or _num(t, x) <= x_max)]
    ok.sort(key=lambda t: (_num(t, x), -_num(t, y), t.number))
    front: list[Trial] = []
    for t in ok:
        if not front or _num(t, y) > _num(front[-1], y):
            front.append(t)
    return front


def pareto_table(trials: Sequence[Trial], x: str = "latency_ms", y: str = "score", limit: int | None = None,
                 fmt: ArchFormat | None = None) -> str:
    """The Pareto front as a plain-text table (best score last)."""
    front = pareto_front(trials, x, y)
    done = sum(t.ok for t in trials)
    head = f"Pareto front ({y} up, {x} down): {len(front)} of {done} finished trials" + (
        f", {len(trials) - done} failed" if len(trials) > done else "")
    if not front:
        return head
    rows = front if limit is None or len(front) <= limit else front[-limit:]
    lines = [head, f"  {'trial':>5}  {y:>10}  {x:>10}  {'params_m':>8}  arch"]
    for t in rows:
        arch = fmt(t.arch) if fmt else t.arch.key
        lines.append(f"  {t.number:>5}  {_num(t, y):>10.4g}  {_num(t, x):>10.3f}  "
                     f"{_num(t, 'params_m'):>8.3f}  {arch}")
    if len(rows) < len(front):
        lines.insert(2, f"  ... {len(front) - len(rows)} faster ones left out")
    return "\n".join(lines)


# ---- loading -------------------------------------------------------------------------------------
@dataclass
class SearchRecord:
    trials: list[Trial]
    config: dict[str, Any]
    source: str

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
    from nas.search_config import SearchConfig, study_name
    from nas.store import STORE_FILE, default_spec, open_store
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


def plot(trials: Sequence[Trial], x: str = "latency_ms", y: str = "score", bound: float | None = None,
         title: str = "") -> Any:
    """A matplotlib Figure (Agg): all finished trials, the Pareto front, the latency bound."""
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, no display, no global state
    fig = Figure(figsize=(7.5, 4.8), dpi=110)
    ax = fig.add_subplot()
    pts = [(_num(t, x), _num(t, y)) for t in trials if t.ok]
    pts = [(a, b) for a, b in pts if math.isfinite(a) and math.isfinite(b)]
    if pts:
        xs, ys = zip(*pts)
        ax.scatter(xs, ys, s=14, c="#9aa5b1", label=f"trials ({len(pts)})", zorder=2)
    front = pareto_front(trials, x, y)
    if front:
        fx, fy = [_num(t, x) for t in front], [_num(t, y) for t in front]
        ax.step(fx, fy, where="post", color="#d1495b", lw=1.5, zorder=3)
        ax.scatter(fx, fy, s=30, c="#d1495b", label=f"Pareto front ({len(front)})", zorder=4)
    if bound is not None:
        ax.axvline(bound, color="#2e4057", ls="--", lw=1, label=f"bound {bound:g} ms")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title or f"{y} vs {x}")
    ax.grid(alpha=0.3)
    if pts or bound is not None:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def write_report(folder: str | Path, record: SearchRecord, x: str = "latency_ms", y: str = "score",
                 out: str | Path | None = None) -> dict[str, Any]:
    """Write pareto.png, report.html and trials.csv into `out` (default: the search folder)."""
    from nas.core.files import atomic_write_text
    out = Path(out or folder)
    out.mkdir(parents=True, exist_ok=True)
    cfg, trials = record.config, record.trials
    fmt = record.arch_format()
    bounds = cfg.get("latency_ms") or []
    bound = float(bounds[0]) if bounds and x == "latency_ms" else None
    title = f"{cfg.get('space', '?')} on {', '.join(cfg.get('targets') or ['?'])}: {y} vs {x}"
    fig = plot(trials, x, y, bound, title)
    png = out / "pareto.png"
    fig.savefig(png)
    svg = io.StringIO()
    fig.savefig(svg, format="svg", metadata={"Date": None})
    csv_path = write_csv(trials, out / "trials.csv", fmt)
    front = pareto_front(trials, x, y)
    html_path = out / "report.html"
    atomic_write_text(html_path, _html(cfg, trials, front, svg.getvalue(), fmt, x, y, record.source))
    return {"png": str(png), "html": str(html_path), "csv": str(csv_path), "trials": len(trials),
            "complete": sum(t.ok for t in trials), "failed": sum(not t.ok for t in trials),
            "pareto": [{"number": t.number, y: _num(t, y), x: _num(t, x), "arch": fmt(t.arch)} for t in front]}


def _html(cfg: dict[str, Any], trials: Sequence[Trial], front: Sequence[Trial], svg: str, fmt: ArchFormat,
          x: str, y: str, source: str) -> str:
    e = html.escape
    svg = svg[svg.find("<svg"):]  # drop the XML prolog and doctype: inline SVG in HTML5
    settings = "".join(f"<tr><th>{e(str(k))}</th><td>{e(json.dumps(v))}</td></tr>" for k, v in cfg.items())
    rows = "".join(f"<tr><td>{t.number}</td><td>{_num(t, y):.4g}</td><td>{_num(t, x):.3f}</td>"
                   f"<td>{_num(t, 'params_m'):.3f}</td><td><code>{e(fmt(t.arch))}</code></td></tr>"
                   for t in reversed(front))
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
<table><tr><th>trial</th><th>{e(y)}</th><th>{e(x)}</th><th>params_m</th><th>arch</th></tr>{rows}</table>
<h2>Settings</h2>
<table>{settings}</table>
<h2>Failed trials ({len(failed)})</h2>
<table><tr><th>trial</th><th>arch</th><th>error</th></tr>{fail_rows}</table>
</body></html>
"""
