#!/usr/bin/env python3
"""Time the ONNX layers of a `nas latency bundle` on this device. Needs only onnxruntime + numpy.

    python profile_onnx.py BUNDLE_DIR [--provider P] [--threads N] [--opt-level L]
                           [--warmup W] [--repeats R] [--rounds K] [--timeout-s S]

Settings default to those in BUNDLE_DIR/manifest.json. Results are appended to
BUNDLE_DIR/results.jsonl (or --results) one line per (layer, round) as they are measured, so an
interrupted run resumes where it stopped: run the same command again. The layers are timed in
`rounds` passes over the whole list (alternating direction), each pass giving every layer
repeats/rounds runs, so a slow drift of the device's speed is spread over all layers alike.
With --timeout-s each layer runs in a worker process that is killed when a pass over that layer
takes longer; the layer is recorded as timed out and skipped on resume (unless --retry-failed).
Copy results.jsonl back and run `nas latency import BUNDLE_DIR --out table.json`.

Exit codes: 0 every layer measured, 1 some layers failed or timed out, 2 bad usage or input.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BUNDLE_FORMAT = "nas-latency-bundle/1"
RESULTS_FORMAT = "nas-latency-results/1"
LEVELS = ("disable", "basic", "extended", "all")
#: session fields that must be equal across resumed runs writing into one results file
SAME = ("bundle_id", "provider", "threads", "opt_level", "warmup", "repeats", "rounds", "onnxruntime", "cpu")
log = logging.getLogger("profile_onnx")


class Fail(Exception):
    """A problem with the user's input: message printed, exit code 2."""


# ---- measuring -------------------------------------------------------------------------------
def make_session(path: str, provider: str, threads: int, opt_level: str) -> Any:
    import onnxruntime as ort
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = levels[opt_level]
    opts.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=opts, providers=[provider])


def time_layer(job: dict[str, Any]) -> list[float]:
    """Warm up, then time `job["runs"]` calls; wall times in ms."""
    import numpy as np
    sess = make_session(job["path"], job["provider"], job["threads"], job["opt_level"])
    x = np.random.default_rng(0).standard_normal(job["shape"]).astype(np.float32)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(job["warmup"]):
        sess.run(None, feed)
    times = []
    for _ in range(job["runs"]):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _worker(conn: Any) -> None:
    """Worker process loop: receive a job, answer ("ok", times) or ("failed", message)."""
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            conn.send(("ok", time_layer(job)))
        except Exception as exc:  # noqa: BLE001 - any failure of a layer on this device is recorded
            conn.send(("failed", f"{type(exc).__name__}: {exc}"[:500]))


class Runner:
    """Runs jobs in-process, or in a killable worker process when a timeout is set."""

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self.proc: Any = None
        self.conn: Any = None

    def run(self, job: dict[str, Any]) -> tuple[str, Any]:
        if self.timeout_s is None:
            try:
                return "ok", time_layer(job)
            except Exception as exc:  # noqa: BLE001 - recorded as a failed layer
                return "failed", f"{type(exc).__name__}: {exc}"[:500]
        if self.proc is None:
            import multiprocessing as mp
            ctx = mp.get_context("spawn")
            self.conn, child = ctx.Pipe()
            self.proc = ctx.Process(target=_worker, args=(child,), daemon=True)
            self.proc.start()
        self.conn.send(job)
        if self.conn.poll(self.timeout_s):
            try:
                return self.conn.recv()
            except EOFError:   # the worker died (e.g. a crash inside the runtime)
                self.close(kill=True)
                return "failed", "worker process died while running this layer"
        self.close(kill=True)
        return "timeout", f"no result within --timeout-s {self.timeout_s:g} s"

    def close(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.conn.send(None)
        self.proc.join(timeout=10)
        self.proc, self.conn = None, None


# ---- device info -----------------------------------------------------------------------------
def cpu_name() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        for field in ("model name", "Hardware", "Processor", "cpu model"):
            for line in info.splitlines():
                if line.split(":")[0].strip() == field:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5, check=False).stdout.strip() or platform.processor()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def device_info(args: argparse.Namespace, bundle_id: str) -> dict[str, Any]:
    import onnxruntime as ort
    return {"type": "session", "format": RESULTS_FORMAT, "bundle_id": bundle_id,
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu": cpu_name(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": ort.__version__, "ort_device": ort.get_device(),
            "available_providers": ort.get_available_providers(), "provider": args.provider,
            "threads": args.threads, "opt_level": args.opt_level, "warmup": args.warmup,
            "repeats": args.repeats, "rounds": args.rounds, "timeout_s": args.timeout_s}


# ---- results file ----------------------------------------------------------------------------
def read_results(path: Path) -> list[dict[str, Any]]:
    """Rows of an existing results file. A final line cut off by a crash is removed (with a note);
    any other unreadable line is an error naming it."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:   # no newline at the end: the last write was interrupted
        log.warning("%s: dropping an incomplete last line (interrupted write): %.80s", path, lines[-1])
        lines.pop()
        with open(path, "r+") as fh:
            fh.truncate(len("\n".join(lines)) + (1 if lines else 0))
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise Fail(f"{path} line {n} is corrupt ({exc.msg}); fix or delete that line, or use --results NEW.jsonl")
        if not isinstance(row, dict) or row.get("type") not in ("session", "layer"):
            raise Fail(f"{path} line {n} is not a results row (needs an object with type 'session' or 'layer')")
        rows.append(row)
    return rows


def append(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(row, separators=(",", ":")) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# ---- main ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", help="folder with manifest.json and layers/ (from 'nas latency bundle')")
    p.add_argument("--results", help="results file to append to (default BUNDLE/results.jsonl)")
    p.add_argument("--provider", help="onnxruntime execution provider (default: the manifest's)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: the manifest's)")
    p.add_argument("--opt-level", choices=LEVELS, help="graph optimisation level (default: the manifest's)")
    p.add_argument("--warmup", type=int, help="untimed runs per layer and round (default: the manifest's)")
    p.add_argument("--repeats", type=int, help="timed runs per layer over all rounds (default: the manifest's)")
    p.add_argument("--rounds", type=int, default=5, help="passes over all layers (default 5)")
    p.add_argument("--timeout-s", type=float, help="give up on a layer after this many seconds per round")
    p.add_argument("--retry-failed", action="store_true", help="measure failed or timed-out layers again")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def load_manifest(bundle: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
    except OSError as exc:
        raise Fail(f"cannot read {bundle / 'manifest.json'}: {exc.strerror} (is {bundle} a bundle folder?)")
    except json.JSONDecodeError as exc:
        raise Fail(f"{bundle / 'manifest.json'} is not valid JSON ({exc.msg})")
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise Fail(f"{bundle / 'manifest.json'} is not a {BUNDLE_FORMAT} manifest")
    return manifest


def settle(args: argparse.Namespace, manifest: dict[str, Any]) -> None:
    """Fill unset options from the manifest's settings and check them."""
    import onnxruntime as ort
    st = manifest.get("settings", {})
    for name in ("provider", "threads", "opt_level", "warmup", "repeats"):
        if getattr(args, name) is None:
            setattr(args, name, st[name])
    available = ort.get_available_providers()
    if args.provider not in available:
        raise Fail(f"execution provider {args.provider!r} is not available in this onnxruntime "
                   f"{ort.__version__}; available: {', '.join(available)}")
    if args.opt_level not in LEVELS:
        raise Fail(f"--opt-level {args.opt_level!r} is not one of {', '.join(LEVELS)}")
    for name, low in (("threads", 1), ("repeats", 1), ("rounds", 1), ("warmup", 0)):
        if getattr(args, name) < low:
            raise Fail(f"--{name} must be at least {low}, got {getattr(args, name)}")
    if args.timeout_s is not None and not (math.isfinite(args.timeout_s) and args.timeout_s > 0):
        raise Fail(f"--timeout-s must be a positive number of seconds, got {args.timeout_s}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        return run(args)
    except Fail as exc:
        print(f"profile_onnx: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("profile_onnx: interrupted; results so far are saved - run the same command to resume",
              file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle)
    manifest = load_manifest(bundle)
    settle(args, manifest)
    results = Path(args.results) if args.results else bundle / "results.jsonl"
    rows = read_results(results)
    session = device_info(args, manifest["bundle_id"])
    for n, old in enumerate(rows, 1):
        if old["type"] == "session":
            diff = {k: (old.get(k), session[k]) for k in SAME if old.get(k) != session[k]}
            if diff:
                raise Fail(f"{results} line {n} was written with other settings or on another device/bundle "
                           f"({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in diff.items())}); "
                           f"resume with the same settings or write to another --results file")
    done = {(r.get("key"), r.get("round")) for r in rows if r["type"] == "layer"
            and (r.get("status") == "ok" or not args.retry_failed)}
    gave_up = {r.get("key") for r in rows if r["type"] == "layer" and r.get("status") != "ok"} \
        if not args.retry_failed else set()
    session["session"] = sum(r["type"] == "session" for r in rows)
    layers = manifest["layers"]
    todo = [(r, lay) for r in range(args.rounds)
            for lay in (layers if r % 2 == 0 else layers[::-1])
            if (lay["key"], r) not in done and lay["key"] not in gave_up]
    if not todo:
        log.info("all %d layers x %d rounds already in %s", len(layers), args.rounds, results)
        return 1 if gave_up else 0
    append(results, session)
    log.info("%s: %d layers x %d rounds, %d (layer, round) pairs to do; %s, %s threads=%d, onnxruntime %s",
             bundle, len(layers), args.rounds, len(todo), session["cpu"], args.provider, args.threads,
             session["onnxruntime"])
    runs = max(1, math.ceil(args.repeats / args.rounds))
    runner, failed = Runner(args.timeout_s), set(gave_up)
    t_start = time.perf_counter()
    try:
        for i, (rnd, lay) in enumerate(todo, 1):
            if lay["key"] in failed:
                continue
            job = {"path": str(bundle / lay["file"]), "shape": lay["input_shape"], "provider": args.provider,
                   "threads": args.threads, "opt_level": args.opt_level, "warmup": args.warmup, "runs": runs}
            status, value = runner.run(job)
            row: dict[str, Any] = {"type": "layer", "key": lay["key"], "round": rnd, "status": status,
                                   "session": session["session"]}
            if status == "ok":
                row["times_ms"] = [round(t, 6) for t in value]
                value = sorted(value)[len(value) // 2]
                log.info("[%d/%d] round %d %-60s %9.4f ms", i, len(todo), rnd, lay["key"][:60], value)
            else:
                row["error"] = value
                failed.add(lay["key"])
                log.warning("[%d/%d] round %d %s: %s %s", i, len(todo), rnd, lay["key"], status, value)
            append(results, row)
    finally:
        runner.close()
    log.info("done in %.1f s; results in %s%s", time.perf_counter() - t_start, results,
             f"; {len(failed)} layers failed or timed out" if failed else "")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
