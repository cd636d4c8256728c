"""`nas search --space ofa_mbv3 --evaluator predictor` at OFA's published Pixel 1 latencies.

    python benchmarks/ofa_search.py [--target pixel1-2019] [--trials 600] [--seed 0] [--bounds 20 28 40 58 79 132 143]
                                    [--write README.md]

For each latency bound: the best arch of an evolution search scored by the `predictor` evaluator
(predicted ImageNet top-1 without fine-tuning), its latency on --target, MACs and params; next to
(a) the best *measured* top-1 among the shipped DyNAS-T archs within the same bound on the same
target (ground truth: what the predictor's pick should approach), and (b) OFA's published Pixel 1
net at that latency (OFA README: top-1 after fine-tuning 25 or 75 epochs, params, MACs; the 79-143 ms
nets have more params than the largest w1.0 arch, 7.66M, so they come from OFA's wider w1.2 supernet;
timed with OFA's own Pixel 1 table), with the best measured w1.0 top-1 at no more MACs than that net.
A bound below every arch of the space (at 224 px) is reported as infeasible, not searched. Under a loose
bound the predictor's MACs range (declared by the evaluator, searched as a constraint) is what binds.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: OFA README, "Google Pixel1" specialized nets: latency ms -> (top-1 % after fine-tuning, params M, MACs M)
OFA_PIXEL1: dict[int, tuple[float, float, int]] = {
    143: (80.1, 9.2, 642), 132: (79.8, 9.2, 593), 79: (78.7, 8.2, 356), 58: (76.9, 5.8, 230),
    40: (74.9, 6.0, 162), 28: (73.3, 5.2, 109), 20: (71.4, 4.3, 77)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default="pixel1-2019")
    ap.add_argument("--trials", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bounds", type=float, nargs="+", default=sorted(OFA_PIXEL1))
    ap.add_argument("--write", help="README file whose ofa-search markers get the table")
    args = ap.parse_args()

    from latency.devices.pixel1 import TARGETS
    from latency.targets import lut_model
    from nas import SearchConfig, search
    from nas.evaluators.predictor import _space, samples

    space = _space()
    model = lut_model(args.target, space)
    data = samples()
    measured = [(model.predict(s.arch), s.top1, s.arch) for s in data]
    fastest = min(model.predict(space.parse(space.presets["ofa-min"])), min(m[0] for m in measured))
    truth = {s.arch: s.top1 for s in data}
    from search_spaces.op_params import arch_params
    largest = arch_params(space, space.parse(space.presets["ofa-max"]))
    lines = [f"Target `{args.target}`, evolution, {args.trials} trials, seed {args.seed}. The fastest ofa_mbv3 arch at "
             f"224 px takes {fastest:.1f} ms; the largest (ofa-max) has {largest / 1e6:.2f}M params."]
    if args.target in TARGETS:
        import json

        from latency.devices.pixel1 import net_ms
        from search_spaces.reference_nets import mobilenet_v3
        points = json.loads((Path(__file__).resolve().parents[1] / "latency/devices/pixel1_data.json").read_text())
        v3 = [p["ms"] for src in points["sources"] if src["id"] == "mbv3_session" for p in src["points"]
              if p["name"] == "MobileNetV3-Large 1.0"][0]
        v3_here = net_ms(mobilenet_v3("large")) * TARGETS[args.target].factor
        lines[0] += (f" Speed level: MobileNetV3-Large 1.0 takes {v3_here:.1f} ms on {args.target}, {v3} ms in the "
                     f"MobileNetV3 authors' 2019 session (OFA's Pixel 1 comparisons are at that level).")
    lines += ["", f"| {args.target} bound | found: predicted top-1 (ms, MACs, params) | best measured top-1 in the bound "
                  "(ms) | OFA's net: top-1 fine-tuned (params, MACs) | best measured at <= its MACs |",
              "|---:|---|---:|---|---:|"]
    found: list[str] = []
    for bound in args.bounds:
        ofa = OFA_PIXEL1.get(int(bound)) if float(bound).is_integer() else None
        ofa_text = f"{ofa[0]:.1f}% ({ofa[1]:.1f}M, {ofa[2]}M)" if ofa else "-"
        by_macs = [s.top1 for s in data if ofa and s.macs <= ofa[2] * 1e6]
        ofa_text += f" | {max(by_macs):.2f}%" if by_macs else " | none"
        inside = [m for m in measured if m[0] <= bound]
        best = max(inside, key=lambda m: m[1]) if inside else None
        best_text = f"{best[1]:.2f}% ({best[0]:.1f})" if best else "none"
        if bound < fastest:
            lines.append(f"| {bound:g} ms | infeasible at 224 px | {best_text} | {ofa_text} |")
            continue
        # the predictor declares its rows' MACs range; the search keeps to it as a constraint (macs_m<=506.48),
        # so even a loose bound's children are not grown past it
        result = search(SearchConfig(space="ofa_mbv3", targets=(args.target,), latency_ms=(bound,),
                                     evaluator="predictor", trials=args.trials, seed=args.seed), progress=False)
        if result is None or result.best is None:
            lines.append(f"| {bound:g} ms | no arch within the predictor's range found | {best_text} | {ofa_text} |")
            continue
        m, arch = result.best.metrics, result.best.arch
        canon = space.canonical(arch)
        known = f", measured {truth[canon]:.2f}%" if canon in truth else ""
        lines.append(f"| {bound:g} ms | {m['score']:.2f}% ({m['latency_ms']:.1f} ms, {m['macs_m']:.0f}M, "
                     f"{m['params_m']:.2f}M{known}) | {best_text} | {ofa_text} |")
        found.append(f"  {bound:g} ms: {space.format(canon)}")
    text = "\n".join(lines)
    print(text + "\n\nfound archs (canonical form: skips last in each stage):\n" + "\n".join(found))
    if args.write:
        _write(Path(args.write), text, args)


def _write(path: Path, text: str, args: argparse.Namespace) -> None:
    """Replace the text between README's ofa-search markers (they must exist)."""
    begin, end = "<!-- ofa-search: begin -->", "<!-- ofa-search: end -->"
    doc = path.read_text()
    if begin not in doc or end not in doc:
        raise SystemExit(f"{path}: no {begin} ... {end} markers")
    cmd = f"python benchmarks/ofa_search.py --target {args.target} --trials {args.trials} --seed {args.seed} --write {path.name}"
    body = f"{begin}\nGenerated by `{cmd}`.\n\n{text}\n{end}"
    path.write_text(doc[:doc.index(begin)] + body + doc[doc.index(end) + len(end):])


if __name__ == "__main__":
    main()
