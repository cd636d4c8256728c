"""Run every shell command of README.md, in order, in a scratch folder (issue 29).

    python .ci/readme_commands.py            # run them all; exit 1 if one fails (CI runs this)
    python .ci/readme_commands.py --list     # print the plan: each README line and what runs for it

Each line of each ```bash block is one command. It runs verbatim through bash, with `nas`, `python` and
`python3` meaning this checkout (a shim folder first on PATH), in a fresh folder with its own NAS_CACHE_DIR
(a new user's cache). Three tables below say where a command does not run verbatim, and why:

- SMALLER: long commands run with smaller sizes. An entry changes only the flags it names
  (`set`: flag -> value, replaced or appended; `drop`: flags removed; `add`: extra tokens), applied by
  `smaller()` to the README's own tokens, so the command that runs is the README line with those sizes
  and nothing else changed.
- INSTEAD / SKIP: commands that cannot run here (pip installs CI has just done, data sets and GPUs CI has
  not, a web server, several nodes), each with the reason.
- BEFORE: files a command expects that the README does not make before it (the user's own measurements,
  a model), made by the named step just before it.

Every key of every table must be a README command: `plan()` raises when the README changes under an entry
(tests/test_readme_commands.py checks this on every test run), so a substitution cannot drift silently.
A command with `[optional]` parts (a synopsis) runs without them.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(Path(__file__).resolve().parent) not in sys.path:   # .ci is not a package: its sibling module
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import readme_lanes  # noqa: E402
README = ROOT / "README.md"


@dataclass(frozen=True)
class Small:
    why: str
    set: dict[str, str] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    add: tuple[str, ...] = ()


#: README command -> smaller sizes (CI time), why
_TRIALS = "fewer trials (CI time); the search is the same"
_SEEDS = "2 seeds instead of 20 (CI time); the benchmark is the same"
SMALLER: dict[str, Small] = {
    "nas search --space mbconv --target pixel1 --latency-ms 80 --trials 100 --seed 0 --out runs/p1":
        Small(_TRIALS, set={"--trials": "8"}),
    "nas search --resume runs/p1 --trials 200": Small(_TRIALS + " (twice the first run's, as in the README)",
                                                      set={"--trials": "16"}),
    "nas search --space mbconv --target pixel1 --target xeon-2.8ghz --latency-ms 80 --latency-ms 8 --out runs/two":
        Small(_TRIALS, set={"--trials": "8"}),
    "nas search --space mbconv --target cpu --strategy nsga2 --out runs/front && nas report runs/front":
        Small(_TRIALS, set={"--trials": "8"}),
    "nas search --space nasnet -o variant=darts --strategy darts --target pixel1 --target cpu --out runs/darts":
        Small("1 epoch on 64 synthetic images, 2 trials (CI time: on digits one epoch is minutes of CPU)",
              set={"--epochs": "1", "--trials": "2", "--dataset": "synthetic:64"}),
    "nas search --space mbconv --target cpu --runner ray --workers 2 --out runs/ray": Small(_TRIALS, set={"--trials": "4"}),
    "nas search --space mbconv --target pixel1 --trials 20 --runner ray --address 127.0.0.1:6379 --out runs/cluster":
        Small(_TRIALS, set={"--trials": "4"}),
    "nas latency profile --space mbconv --out my-device.json":
        Small("fewer timing runs per layer and 3 calibration nets (CI time)",
              set={"--repeats": "10", "--warmup": "2", "--calibration-nets": "3"}),
    "nas latency profile --space mbconv --precision int8 --out mbconv-int8.json":
        Small("fewer timing runs per layer and 3 calibration nets (CI time; 72 s CPU with the defaults)",
              set={"--repeats": "10", "--warmup": "2", "--calibration-nets": "3"}),
    "nas latency validate --space mbconv --table my-device.json --samples 30 --plot check.png":
        Small("fewer sample nets (CI time)", set={"--samples": "5"}),
    "nas latency validate --space mbconv --table mbconv-int8.json --clock cpu":
        Small("3 sample nets instead of the default (CI time: 112 s of CPU with the default)", set={"--samples": "3"}),
    "nas search --space mbconv --target pixel1 --constraint 'params_m<=3' --evaluator-option proxy=flops --trials 30 --out runs/params":
        Small(_TRIALS, set={"--trials": "8"}),
    "nas search --space mbconv --target pixel1 --constraint 'macs_m<=250' --evaluator-option proxy=flops --trials 30 --out runs/macs":
        Small(_TRIALS, set={"--trials": "8"}),
    "nas search --space mbconv --target pixel1 --constraint 'peak_memory_mb<=4' --evaluator-option proxy=flops --trials 30 --out runs/memory":
        Small(_TRIALS, set={"--trials": "8"}),
    "nas search --space mbconv --target cpu --latency-ms 8 --constraint 'peak_memory_mb<=4' --evaluator-option proxy=flops --trials 20 --verify cpu --out runs/verified":
        Small(_TRIALS, set={"--trials": "8"}),
    "nas bench budgets --strategies evolution,exact --seeds 10": Small("fewer seeds (CI time)", set={"--seeds": "2"}),
    "nas bench latency [--devices pixel2,raspi4] [--leave-out kind] [--json]":
        Small("the synopsis's two devices, one draw per size (CI time; all 27 devices take minutes)",
              set={"--devices": "pixel2,raspi4", "--repeats": "1"}),
    "nas train runs/p1/best.json --dataset cifar10:~/data/cifar10 --epochs 200 --device cuda --amp --out runs/p1-train":
        Small("no CIFAR-10 and no GPU in CI: digits on the CPU at the README's CPU size, 1 epoch; it makes "
              "runs/p1-train for the export lines", set={"--dataset": "digits", "--epochs": "1", "--device": "cpu"},
              drop=("--amp",), add=("-o", "resolution=32", "-o", "width_mult=0.35")),
    "nas train runs/p1/best.json --dataset digits -o resolution=32 -o width_mult=0.35 --out runs/p1-cpu":
        Small("1 epoch (CI time)", set={"--epochs": "1"}),
    "nas train --space mbconv --arch single-path-nas --dataset imagefolder:~/data/pets --out runs/spnas":
        Small("no pets images in CI: digits at the README's CPU size, 1 epoch", set={"--dataset": "digits",
              "--epochs": "1"}, add=("-o", "resolution=32", "-o", "width_mult=0.35")),
    "nas train runs/p1/best.json --dataset digits -o resolution=32 -o width_mult=0.35 --out runs/p1-cpu --resume --epochs 60":
        Small("2 epochs: one more than the 1-epoch run above (CI time)", set={"--epochs": "2"}),
    "nas train runs/sn/subnet.pt --dataset digits --epochs 10 --lr 0.01 --out runs/sn-tune":
        Small("1 epoch (CI time)", set={"--epochs": "1"}),
    "nas train runs/p1/best.json --dataset digits -o resolution=32 -o width_mult=0.35 --out runs/p1-int8 --export-int8":
        Small("1 epoch (CI time)", set={"--epochs": "1"}),
    "nas search --space mbconv -o resolution=32 -o width_mult=0.25 --target cpu-int8 --latency-ms 2 --evaluator train --quantize-top 3 --out runs/q":
        Small("2 trials of 1 epoch, both quantized (CI time: ~15 s CPU a trial here)",
              set={"--trials": "2", "--epochs": "1", "--quantize-top": "2"}),
    "nas bench proxies --space nb201 --truth cifar10 [--archs 150] [--dataset cifar10:PATH] [--json]":
        Small("fewer archs (CI time)", set={"--archs": "3"}),
    "nas bench proxies --space nasnet -o variant=darts --truth nb301 --archs 20 --proxies meco,swap,synflow,params,flops":
        Small("fewer archs (CI time)", set={"--archs": "3"}),
    "python benchmarks/new_proxies.py --archs 150 --settings nb201/cifar10,nats_sss/cifar10 --proxies meco,swap":
        Small("fewer archs (CI time)", set={"--archs": "3"}),
    "python benchmarks/new_proxies.py --archs 60 --settings nb201/cifar100,nb201/ImageNet16-120 --proxies meco,swap,params":
        Small("fewer archs (CI time)", set={"--archs": "3"}),
    "python benchmarks/new_proxies.py --archs 60 --settings nasnet/nb301 --proxies meco,swap,naswot,synflow,params,flops":
        Small("fewer archs (CI time)", set={"--archs": "3"}),
    "python benchmarks/new_proxies.py --archs 30 --settings nats_sss/cifar10 --proxies meco,meco_opt,swap,synflow,params,flops":
        Small("fewer archs (CI time)", set={"--archs": "3"}),
    "python benchmarks/new_proxies.py --archs 30 --settings nb201/cifar10,nb201/cifar100 --proxies meco,meco_opt,swap,params,flops":
        Small("fewer archs (CI time)", set={"--archs": "3"}),
    "python benchmarks/new_proxies.py --archs 30 --settings nb201/ImageNet16-120,nasnet/nb301 --proxies meco,meco_opt,swap,naswot,params,flops":
        Small("fewer archs (CI time)", set={"--archs": "3"}),
    "python benchmarks/new_proxies.py --archs 100 --settings nats_sss/cifar10 --proxies meco,meco_opt,synflow,params":
        Small("fewer archs (CI time)", set={"--archs": "3"}),
    "nas search --space ofa_mbv3 --target pixel1 --latency-ms 79 --evaluator predictor --trials 600 --out runs/ofa79":
        Small(_TRIALS, set={"--trials": "20"}),
    # the strategy benchmark: 20 seeds of the three problems take ~15 min of CPU; 2 seeds run the same code
    "nas bench strategies --space nats_sss --strategies evolution,bo --budgets 50,100": Small(_SEEDS, set={"--seeds": "2"}),
    "nas bench strategies --space nb201 --strategies evolution,bo --budgets 50,100 --out nb201_100.json":
        Small(_SEEDS, set={"--seeds": "2"}),
    "nas bench strategies --space nasnet --strategies evolution,bo --budgets 50,100":
        Small(_SEEDS + ", budget 50 only", set={"--seeds": "2", "--budgets": "50"}),
    "nas bench strategies --space nb201 --strategies evolution --budgets 50,100,300 --out nb201_300.json":
        Small(_SEEDS, set={"--seeds": "2"}),
    "python benchmarks/readme_figures.py --budgets 50,100 --write README.md":
        Small(_SEEDS + ", budget 50 only", set={"--seeds": "2", "--budgets": "50"}),
    "python benchmarks/ofa_predictor.py": Small("2 folds instead of 5 (CI time)", set={"--folds": "2"}),
    "python benchmarks/ofa_search.py --write README.md":
        Small("fewer trials per bound (CI time: 600 trials x 7 bounds)", set={"--trials": "30"}),
    "nas search --space ofa_mbv3 --strategy supernet --target pixel1-2019 --latency-ms 40 --epochs 1 --dataset synthetic:256 --out runs/ofa-supernet":
        Small(_TRIALS + " (CI time: 50 subnets with BN recalibration are ~30 s CPU)", set={"--trials": "10"}),
}

#: README command -> the command run instead, why
INSTEAD: dict[str, tuple[str, str]] = {
    "pip install torch==2.13.0 && pip install -e . && nas search --space mbconv --target pixel1 --latency-ms 80 --out runs/pixel1":
        ("nas search --space mbconv --target pixel1 --latency-ms 80 --out runs/pixel1 --trials 8",
         ".ci/run has just made these installs; the search with fewer trials (CI time)"),
}

#: README command -> why it does not run here
SKIP: dict[str, str] = {
    "optuna-dashboard sqlite:///runs/p1/trials.db": "a web server that runs until stopped (optuna-dashboard is not "
                                                    "a dependency)",
    "torchrun --nproc_per_node=4 $(which nas) train runs/p1/best.json --dataset cifar10:~/data/cifar10 --device cuda --out runs/p1-ddp":
        "4 GPUs and CIFAR-10; torchrun training is tested on CPU in tests/test_distributed*.py",
    "torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --nproc_per_node=8 $(which nas) train ...":
        "two nodes (a template: HOST and ...)",
}

_NB201 = ("python -c \"from latency.bench_devices import nb201_latency; import numpy as np; d = nb201_latency(); "
          "b = sorted(d.index); i = np.random.default_rng(0).choice(len(b), 12, replace=False); "
          "open('npu.csv', 'w').write('arch,ms\\n' + ''.join(f'{b[k]},{d.ms[chr(112)+\\\"ixel3\\\"][b[k]]}\\n' for k in i)); "
          "open('archs.txt', 'w').write(''.join(b[k] + chr(10) for k in i[:3]))\"")

#: README command -> (step made just before it, why)
BEFORE: dict[str, tuple[str, str]] = {
    "python benchmarks/readme_figures.py --budgets 50,100 --write README.md":
        (f"cp {shlex.quote(str(README))} README.md",
         "--write README.md rewrites the README in the folder the user runs it in: here a copy in the scratch folder"),
    "nas latency predict --target pixel1 --target cpu --onnx net.onnx [--input-shape 1,3,224,224] [--json]":
        ("nas export runs/p1/best.json --format onnx --out net.onnx",
         "net.onnx is the user's own model; the README exports this one a few lines below"),
    "nas latency calibrate --space nb201 --measurements npu.csv --out npu.json":
        (_NB201, "npu.csv (arch,ms) and archs.txt are the user's own measurements and archs: 12 nb201 archs with "
                 "their measured pixel3 latencies (NASLib's HW-NAS-Bench data)"),
    "nas train runs/sn/subnet.pt --dataset digits --epochs 10 --lr 0.01 --out runs/sn-tune":
        ("nas search --space mbconv -o resolution=32 -o width_mult=0.35 --strategy supernet --epochs 1 --trials 2 "
         "--out runs/sn", "runs/sn/subnet.pt comes from a supernet search (the README's torchrun paragraph "
                          "names it, --out runs/sn); here a small one"),
}

#: the README's test command: with --with-tests it runs verbatim in the repository root, in the caller's
#: environment (not the scratch folder's cache), as one step beside the others (CI); without, it is skipped
TESTS = 'pip install -e ".[test,ray,postgres]" && python -m pytest'

#: README command -> sub-folder of the scratch folder it runs in (the README says where)
CWD: dict[str, str] = {"python3 profile_onnx.py . --threads 1": "bundle"}


@dataclass(frozen=True)
class Step:
    line: int          # README line number
    readme: str        # the command as the README gives it (comment removed)
    run: str | None    # what runs (None: skipped)
    how: str           # verbatim | smaller | instead | skip | before | synopsis
    why: str = ""
    cwd: str = ""


def readme_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) of each line of each ```bash block, trailing comments removed."""
    out, inside = [], False
    for n, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if s.startswith("```"):
            inside = (not inside) and s[3:].strip() == "bash"
            continue
        if inside and s and not s.startswith("#"):
            out.append((n, strip_comment(s)))
    return out


def strip_comment(line: str) -> str:
    """`line` without a trailing `# comment` (a # outside quotes, after whitespace)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and i and line[i - 1].isspace():
            return line[:i].rstrip()
    return line.rstrip()


def smaller(command: str, small: Small) -> str:
    """`command` with the flags of `small` changed (in its first `&&` part); the rest kept token for token."""
    first, sep, rest = command.partition(" && ")
    tokens = shlex.split(first)
    for flag in small.drop:
        if flag not in tokens:
            raise ValueError(f"{flag} is not in {command!r}")
        i = tokens.index(flag)
        takes_value = i + 1 < len(tokens) and not tokens[i + 1].startswith("-")
        del tokens[i:i + (2 if takes_value else 1)]
    for flag, value in small.set.items():
        if flag in tokens:
            tokens[tokens.index(flag) + 1] = value
        else:
            tokens += [flag, value]
    tokens += list(small.add)
    return shlex.join(tokens) + (sep + rest if sep else "")


def plan(text: str | None = None, tests: bool = False) -> list[Step]:
    """The steps for the README `text` (default README.md); raises ValueError when a table names a command
    the README no longer has. `tests`: the README's test command is a step (else skipped)."""
    cmds = readme_commands(README.read_text() if text is None else text)
    given = {c for _, c in cmds}
    for name, table in (("SMALLER", SMALLER), ("INSTEAD", INSTEAD), ("SKIP", SKIP), ("BEFORE", BEFORE),
                        ("CWD", CWD), ("TESTS", (TESTS,))):
        gone = [k for k in table if k not in given]
        if gone:
            raise ValueError(f"{name} names commands the README no longer has (update the table): {gone}")
    steps: list[Step] = []
    for n, c in cmds:
        if c in BEFORE:
            prep, why = BEFORE[c]
            steps.append(Step(n, c, prep, "before", why))
        cwd = CWD.get(c, "")
        if c == TESTS:
            steps.append(Step(n, c, c, "tests", "the test suite, in the repository root", str(ROOT)) if tests else
                         Step(n, c, None, "skip", "the test suite: CI runs it as a step (--with-tests)"))
        elif c in SKIP:
            steps.append(Step(n, c, None, "skip", SKIP[c]))
        elif c in INSTEAD:
            steps.append(Step(n, c, INSTEAD[c][0], "instead", INSTEAD[c][1], cwd))
        else:
            bare = re.sub(r"\s+\[--[^\]]*\]", "", c)   # a synopsis runs without its [optional] parts
            how = "synopsis" if bare != c else "verbatim"
            if c in SMALLER:
                steps.append(Step(n, c, smaller(bare, SMALLER[c]), "smaller", SMALLER[c].why, cwd))
            else:
                steps.append(Step(n, c, bare, how, "", cwd))
    return steps


def _shims(folder: Path) -> dict[str, str]:
    """A PATH whose `nas`, `python` and `python3` are this checkout's, and the environment to run in."""
    bin_dir = folder / ".shims"
    bin_dir.mkdir(exist_ok=True)
    for name, body in (("nas", f'exec {shlex.quote(sys.executable)} -m nas "$@"'),
                       ("python", f'exec {shlex.quote(sys.executable)} "$@"'),
                       ("python3", f'exec {shlex.quote(sys.executable)} "$@"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep),
               NAS_CACHE_DIR=str(folder / ".nas-cache"))
    env.pop("NAS_AUTO_PROFILE", None)
    return env


def run(steps: list[Step], folder: Path, timeout: float, keep_going: bool, lanes: int = 1) -> int:
    """Run `steps` in `folder`; with `lanes` > 1 the groups of steps that share no file run side by side
    (`readme_lanes.groups`), each group in README order."""
    env = _shims(folder)
    if not (folder / "benchmarks").exists():
        (folder / "benchmarks").symlink_to(ROOT / "benchmarks")   # `python benchmarks/x.py` as from the repo root
        shutil.copy(README, folder / "README.md")                  # readme_figures.py --write README.md: a copy
    for step in steps:
        if step.run is None:
            print(f"README:{step.line:<4} skip      {step.readme}\n            ({step.why})", flush=True)
    failed: list[Step] = []
    cpu_total = [0.0]
    lock = threading.Lock()

    def do(step: Step, lane: int) -> bool:
        t0 = time.monotonic()
        suite = step.how == "tests"   # the caller's environment, its whole output shown
        rc, cpu, tail = readme_lanes.run_one(step.run or "", folder / step.cwd, dict(os.environ) if suite else env,
                                             timeout * 3 if suite else timeout, tail=0 if suite else 1500)
        shown = step.run if step.run == step.readme else f"{step.run}\n            (README: {step.readme}; "\
                                                          f"{step.how}{': ' + step.why if step.why else ''})"
        with lock:
            cpu_total[0] += cpu
            print(f"README:{step.line:<4} rc {rc:<3} {cpu:6.1f} s CPU {time.monotonic() - t0:6.1f} s wall"
                  f"{f'  lane {lane}' if lanes > 1 else ''}  {shown}", flush=True)
            if rc != 0 or suite:
                print("    " + tail.replace("\n", "\n    "), flush=True)
            if rc != 0:
                failed.append(step)
        return rc == 0

    todo = [s for s in steps if s.run is not None]
    readme_lanes.run_lanes(readme_lanes.groups(todo) if lanes > 1 else [todo], lanes, do, keep_going,
                           first=lambda step: step.how == "tests")
    print(f"{len(steps)} steps, {len(failed)} failed, {cpu_total[0]:.1f} s CPU in all", flush=True)
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print the plan and stop")
    ap.add_argument("--keep", metavar="DIR", help="run in DIR (made, must be empty) and keep it")
    ap.add_argument("--from-line", type=int, default=0, help="start at this README line (debugging; with --keep "
                                                               "DIR of an earlier run)")
    ap.add_argument("--only", metavar="LINES", help="run only these README lines, e.g. 82-90,292 (debugging)")
    ap.add_argument("--no-ray-cluster", action="store_true",
                    help="skip `ray start` / `ray stop` and the search on that cluster: `ray stop` stops every Ray "
                         "on the machine (for shared machines; CI runs them)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per command (default 600; the test "
                                                                  "suite: 3x)")
    ap.add_argument("--with-tests", action="store_true",
                    help="run the README's test command too (in the repository root, beside the other lines; CI)")
    ap.add_argument("--keep-going", action="store_true", help="run the rest after a failure")
    ap.add_argument("--lanes", type=int, default=1, choices=range(1, 9), metavar="N",
                    help="run groups of commands that share no file on N lanes side by side (1-8; default 1: "
                         "strictly in README order)")
    args = ap.parse_args()
    steps = [s for s in plan(tests=args.with_tests) if s.line >= args.from_line]
    if args.only:
        keep = set()
        for part in args.only.split(","):
            a, _, b = part.partition("-")
            keep.update(range(int(a), int(b or a) + 1))
        steps = [s for s in steps if s.line in keep]
    if args.no_ray_cluster:
        cluster = {s.line for s in steps if s.run and s.run.startswith("ray start")}
        steps = [s for s in steps if not (s.run and (s.run.startswith(("ray start", "ray stop")) or
                                                     ("--address" in s.run and "--runner ray" in s.run)))]
        if cluster:
            print("skipping the Ray cluster commands (--no-ray-cluster)")
    if args.list:
        for s in steps:
            print(f"README:{s.line:<4} {s.how:<9} {s.run if s.run is not None else '-'}"
                  + (f"\n{'':15}({s.why})" if s.why else ""))
        return 0
    if args.keep:
        folder = Path(args.keep)
        folder.mkdir(parents=True, exist_ok=True)
        if any(folder.iterdir()) and not (args.from_line or args.only):
            ap.error(f"--keep {folder} is not empty (continuing an earlier run takes --from-line or --only)")
        return run(steps, folder, args.timeout, args.keep_going, args.lanes)
    with tempfile.TemporaryDirectory(prefix="readme-commands-") as tmp:
        return run(steps, Path(tmp), args.timeout, args.keep_going, args.lanes)


if __name__ == "__main__":
    sys.exit(main())
