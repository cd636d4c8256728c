"""Issue 29's hostile-user cases that end at once (bad input, foreign or broken files), run as a user
would, counting tracebacks, crashes (a signal) and hangs (past --timeout), and checking each exit code
and that the error is one line.

    python benchmarks/hostile_cases.py [--repo DIR] [--timeout 120] [--json]

--repo runs another checkout's `python -m nas` (e.g. the main branch, for a before/after). The cases
that need real training, Ray, torchrun, `ulimit` or `chattr` are in tests/test_rough_edges*.py.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def make_files(d: Path) -> None:
    """The hostile inputs: ONNX models, candidate files, broken configs, a foreign trials.db, CSVs."""
    import numpy as np
    import onnx
    import optuna
    from onnx import TensorProto, helper, numpy_helper

    def conv_model(path: Path, opset: int = 17, two_inputs: bool = False, cyclic: bool = False,
                   external: bool = False) -> None:
        w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
        src = "later" if cyclic else "input"
        nodes = [helper.make_node("Conv", [src, "w"], ["out"], pads=[1, 1, 1, 1])]
        if cyclic:
            nodes.append(helper.make_node("Relu", ["input"], ["later"]))
        ins = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])]
        if two_inputs:
            ins.append(helper.make_tensor_value_info("second", TensorProto.FLOAT, [1, 3, 16, 16]))
        graph = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], [w])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        if external:
            onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data", size_threshold=0)
            (path.parent / (path.name + ".data")).unlink()
        else:
            onnx.save(model, str(path))

    conv_model(d / "good.onnx")
    conv_model(d / "opset99.onnx", opset=99)
    conv_model(d / "two.onnx", two_inputs=True)
    conv_model(d / "cyclic.onnx", cyclic=True)
    conv_model(d / "ext.onnx", external=True)
    (d / "notonnx.onnx").write_bytes(b"\x00\x01garbage")
    (d / "cands").mkdir()
    (d / "binary.txt").write_bytes(bytes(range(256)) * 4)
    for name, text in (("trunc", '{"space": "mbc'), ("list", "[1, 2]")):
        (d / name).mkdir()
        (d / name / "config.json").write_text(text)
    (d / "foreign").mkdir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=f"sqlite:///{d / 'foreign' / 'trials.db'}", study_name="another")
    from latency.bench_devices import nb201_latency
    data = nb201_latency()
    blocks = sorted(data.index)[:8]
    rows = [f"{b},{data.ms['pixel3'][b]}" for b in blocks]
    (d / "huge.csv").write_text("arch,ms\n" + "\n".join(rows[:3] + [rows[3].rsplit(",", 1)[0] + ",1e308"] + rows[4:]))
    (d / "bom.csv").write_text("\ufeffarch,ms\n" + "\n".join(rows) + "\n", encoding="utf-8")


#: (name, argv after `nas`, exit codes allowed); argv may hold {d} (the scratch folder)
CASES: list[tuple[str, list[str], set[int]]] = [
    ("torch-threads 1000000", ["search", "--torch-threads", "1000000", "--out", "{d}/t1"], {2}),
    ("ray workers 1000000", ["search", "--runner", "ray", "--workers", "1000000", "--out", "{d}/t2"], {2}),
    ("train ray workers 100000", ["train", "--space", "mbconv", "--arch", "single-path-nas", "--runner", "ray",
                                  "--workers", "100000", "--out", "{d}/t3"], {2}),
    ("onnx opset 99 (pixel1)", ["latency", "predict", "--target", "pixel1", "--onnx", "{d}/opset99.onnx"], {2}),
    ("onnx opset 99 (cpu)", ["latency", "predict", "--target", "cpu", "--onnx", "{d}/opset99.onnx"], {2}),
    ("onnx second input (pixel1)", ["latency", "predict", "--target", "pixel1", "--onnx", "{d}/two.onnx"], {2}),
    ("onnx cyclic (cpu)", ["latency", "predict", "--target", "cpu", "--onnx", "{d}/cyclic.onnx"], {2}),
    ("onnx missing external data", ["latency", "predict", "--target", "pixel1", "--onnx", "{d}/ext.onnx"], {2}),
    ("not onnx", ["latency", "predict", "--target", "pixel1", "--onnx", "{d}/notonnx.onnx"], {2}),
    ("input-shape 1,3,100000,100000", ["latency", "predict", "--target", "cpu", "--onnx", "{d}/good.onnx",
                                       "--input-shape", "1,3,100000,100000"], {2}),
    ("--candidates DIR", ["search", "--space", "nb201", "--candidates", "{d}/cands", "--out", "{d}/t4"], {2}),
    ("--candidates binary", ["search", "--space", "nb201", "--evaluator", "tabular", "--target", "pixel3",
                             "--candidates", "{d}/binary.txt", "--out", "{d}/t5"], {2}),
    ("truncated config.json", ["search", "--trials", "1", "--out", "{d}/trunc"], {2}),
    ("list config.json", ["search", "--trials", "1", "--out", "{d}/list"], {2}),
    ("foreign trials.db", ["search", "--space", "nb201", "-o", "candidates=naslib", "--evaluator", "tabular",
                           "--target", "pixel3",
                           "--trials", "2", "--out", "{d}/foreign"], {2}),
    ("--device cuda without CUDA", ["search", "--device", "cuda", "--trials", "1", "--out", "{d}/t6"], {2}),
    ("train resolution 1024 batch 64", ["train", "--space", "mbconv", "--arch", "single-path-nas", "-o",
                                        "resolution=1024", "--batch-size", "64", "--out", "{d}/t7"], {2}),
    ("train synthetic:1e12", ["train", "--space", "mbconv", "--arch", "single-path-nas", "-o", "resolution=32",
                              "--dataset", "synthetic:1000000000000", "--out", "{d}/t8"], {2}),
    ("calibrate 1e308 ms", ["latency", "calibrate", "--space", "nb201", "--measurements", "{d}/huge.csv",
                            "--out", "{d}/n.json"], {2}),
    ("calibrate --out DIR", ["latency", "calibrate", "--space", "nb201", "--measurements", "{d}/bom.csv",
                             "--out", "{d}/cands"], {2}),
    ("calibrate BOM csv", ["latency", "calibrate", "--space", "nb201", "--measurements", "{d}/bom.csv",
                           "--out", "{d}/bom.json"], {0}),
    ("bench budgets 10000000", ["bench", "strategies", "--space", "nb201", "--budgets", "50,10000000"], {2}),
]


def run_case(repo: Path, d: Path, argv: list[str], timeout: float) -> dict[str, object]:
    cmd = [sys.executable, "-m", "nas", *[a.replace("{d}", str(d)) for a in argv]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NAS_CACHE_DIR": str(d / ".cache"), "PYTHONPATH": str(repo)}
    try:
        p = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"rc": None, "hang": True, "traceback": False, "crash": False, "one_line": False, "err": ""}
    errors = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith(("WARNING", "  note:"))]
    return {"rc": p.returncode, "hang": False, "traceback": "Traceback" in p.stderr,
            "crash": p.returncode < 0 or p.returncode - 128 in (signal.SIGSEGV, signal.SIGABRT, signal.SIGKILL),
            "one_line": p.returncode == 0 or len(errors) == 1, "err": (errors or [""])[-1][:160]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default=str(ROOT), help="checkout whose `python -m nas` runs (default this one)")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    repo = Path(args.repo).resolve()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        d = Path(tmp)
        make_files(d)
        for name, argv, ok in CASES:
            r = run_case(repo, d, argv, args.timeout)
            r.update(case=name, expected=sorted(ok), ok=r["rc"] in ok and r["one_line"] and not r["traceback"])
            rows.append(r)
            if not args.json:
                print(f"{'ok  ' if r['ok'] else 'FAIL'} rc {r['rc']!s:>4}  {name:<32} {r['err']}", flush=True)
    bad = {k: sum(bool(r[k]) for r in rows) for k in ("traceback", "crash", "hang")}
    summary = {"repo": str(repo), "cases": len(rows), "ok": sum(bool(r["ok"]) for r in rows), **bad}
    print(json.dumps({"summary": summary, "cases": rows}, indent=1) if args.json else json.dumps(summary))
    return 0 if summary["ok"] == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
