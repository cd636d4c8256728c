"""The text report and the plot of `nas latency validate` (latency/validate.py's result dict);
split from validate.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


LABELS = {"joint_lut": "LUT from the joint run", "table_lut": "table LUT", "table_corrected": "table + stored correction",
          "joint_stored": "joint LUT + stored corr.",
          "joint_corrected": "joint LUT + correction", "joint_corrected_holdout": "joint LUT + correction (held out)",
          "table_corrected_holdout": "table LUT + correction (held out)"}

RAW_LABELS = {"table_lut": "table LUT, raw cpu clock", "joint_lut": "joint LUT, raw cpu clock"}

HELD_LABELS = {"joint_lut": "joint LUT", "joint_corrected": "joint LUT + fitted corr.", "table_lut": "table LUT",
               "table_corrected": "table LUT + fitted corr."}


def format_report(r: dict[str, Any]) -> str:
    head = (f"validate {r['space']} with {r['table']}: {r['samples']} archs (seed {r['seed']}), "
            f"{r['settings'].get('precision', 'float32')}, "
            f"{r['settings']['provider']} threads={r['settings']['threads']}, {r.get('clock', 'wall')} clock, "
            f"{'joint' if r['joint'] else 'nets-only'} run in {r['groups']} group(s) x {r['rounds']} rounds"
            f"{'' if r.get('statistic', 'median') == 'median' else ' (' + r['statistic'] + ')'}, {r['seconds']} s")
    cols = f"{'':28}{'n':>4}{'spearman':>10}{'kendall':>9}{'rmse_ms':>9}{'mape_%':>8}{'<=5%':>7}{'<=10%':>7}{'bias_%':>8}"

    def row(label: str, m: dict[str, float]) -> str:
        return (f"{label:28}{m['n']:>4}{m['spearman']:>10.3f}{m['kendall']:>9.3f}{m['rmse_ms']:>9.3f}"
                f"{m['mape_pct']:>8.2f}{m['within_5_pct']:>6.0f}%{m['within_10_pct']:>6.0f}%{m['bias_pct']:>8.2f}")
    lines = [head, cols] + [row(LABELS.get(k, k), m) for k, m in r["metrics"].items()]
    stored = r.get("stored_correction")
    if stored:
        where = (f"fitted when profiling, on {stored.get('nets')} other nets (seed {stored.get('samples_seed')})"
                 if stored.get("source") == "profile" else f"fitted by validate on {stored.get('n')} nets")
        lines.append(f"(stored correction '{stored.get('selected')}': {where})")
    if "drift_pct" in r:
        lines.append(f"(drift: the nets' layers took {r['drift_pct']:+.1f}% against the table's entries in this run; "
                     f"the table rows include it, the joint rows do not)")
    if "repeatability" in r:
        lines.append(row("measured vs itself (ceiling)", r["repeatability"]))
        lines.append(f"(two halves of the rounds of the same nets; repeats spread {r['repeat_spread_pct']:.1f}%)")
    for k, m in r.get("uncorrected", {}).items():
        lines.append(row(f"{RAW_LABELS.get(k, k)}", m))
    if r.get("preemption"):
        costs = [g["switch_cost_ms"] for g in r["preemption"] if g.get("switch_cost_ms") is not None]
        runs = np.mean([g["runs_switched_pct"] for g in r["preemption"]])
        lines.append(f"cpu clock: {runs:.0f}% of runs were preempted; "
                     + (f"{1e3 * float(np.median(costs)):.0f} us of cache refill per preemption taken out of each"
                        if costs else "no per-preemption cost could be estimated"))
    if "holdout" in r:
        h = r["holdout"]
        lines.append(f"held-out archs (correction fitted on {h['n_fit']}, kept feature set "
                     f"{h['selected']!r}, tested on {h['n_test']}):")
        lines += [row("  " + HELD_LABELS.get(k, k), m) for k, m in h.items() if isinstance(m, dict)]
    lines += [f"warning: {w}" for w in r.get("warnings", [])]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: str | Path) -> Path:
    """Predicted vs measured with y = x and +-10% bands (matplotlib, Agg backend)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    meas = np.array([a["measured_ms"] for a in r["archs"]])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    keys = [k for k in r["archs"][0] if k.endswith("_ms") and k not in ("measured_ms", "measured_iqr_ms")]
    values = [meas]
    for k, marker in zip(keys, "os^vD"):
        p = np.array([np.nan if a[k] is None else a[k] for a in r["archs"]], dtype=float)
        name = k[:-3]
        ax.scatter(meas, p, s=14, marker=marker, alpha=0.75, label=LABELS.get(name, name.replace("_", " ")))
        values.append(p)
    lo, hi = 0.95 * float(np.nanmin(np.concatenate(values))), 1.05 * float(np.nanmax(np.concatenate(values)))
    xs = np.array([lo, hi])
    ax.plot(xs, xs, "k-", lw=1, label="y = x")
    ax.fill_between(xs, 0.9 * xs, 1.1 * xs, color="grey", alpha=0.15, label="+-10%")
    ax.set_xlabel("measured whole net (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_title(f"{r['space']}: {r['samples']} archs, {r['settings']['provider'].replace('ExecutionProvider', '')}"
                 f" x{r['settings']['threads']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
