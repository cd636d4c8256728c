"""The rough edges of issue 29 (round 3): what a hostile user and a new user hit. Each case failed on
the code before its fix: a traceback, a crash, a hang or a silent guess; now one clear line (exit 2
usage, 1 failure) or the documented behaviour."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas.cli.main import main
from nas.store.journal import set_aside_torn_records, split_torn
from nas.strategies.catalog import STRATEGIES
from search_spaces.catalog import SPACES, get_space

ROOT = Path(__file__).resolve().parents[1]


def nas(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---- High: every space x weight-sharing strategy trains at a valid size with the defaults -------------
class _Reached(BaseException):
    """Raised once the training space is chosen: the pair got as far as training."""


WEIGHT_SHARING = ("supernet", "single-path", "differentiable", "darts")


def _pairs() -> list[tuple[str, str, str]]:
    pairs = []
    for space_name in SPACES.names():
        space = get_space(space_name)
        for strategy in WEIGHT_SHARING:
            if STRATEGIES.get(strategy).supports(space):
                pairs += [(space_name, strategy, "digits"), (space_name, strategy, "synthetic")]
    return pairs


@pytest.mark.quick
@pytest.mark.parametrize("space_name,strategy,dataset", _pairs())
def test_default_options_give_a_valid_training_size(space_name: str, strategy: str, dataset: str,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 29: `nas search --space vit_resnas --strategy supernet` refused at once with the defaults
    (the proxy resolution 32 with the searched patch 14 is no grid). Every pair, run from the CLI with
    default options, must reach its training with a valid training space."""
    from nas.strategies.weight_sharing import WeightSharingStrategy
    chosen = []
    original = WeightSharingStrategy.train_space

    def stop_before_training(self, ctx, *names):   # type: ignore[no-untyped-def]
        chosen.append(original(self, ctx, *names))
        raise _Reached

    monkeypatch.setattr(WeightSharingStrategy, "train_space", stop_before_training)
    with pytest.raises(_Reached):
        main(["search", "--space", space_name, "--strategy", strategy, "--dataset", dataset,
              "--out", str(tmp_path / "run"), "--quiet"])
    small = chosen[0]
    assert [d.choices for d in small.decisions] == [d.choices for d in get_space(space_name).decisions]
    if space_name == "vit_resnas":   # the proxy at 32 px: patch 4, an 8x8 grid, 2x2 in the last stage
        assert (small.resolution, small.patch, small.grid(small.num_stages - 1)) == (32, 4, 2)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["supernet", "differentiable"])
def test_vit_resnas_weight_sharing_runs_with_defaults(strategy: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The failing commands of issue 29 end to end (tiny data and one epoch; 15-60 s CPU each)."""
    code, out, err = nas(capsys, "search", "--space", "vit_resnas", "--strategy", strategy, "--dataset",
                         "synthetic:48", "--epochs", "1", "--batch-size", "16", "--trials", "2",
                         "--out", str(tmp_path / "run"), "--quiet", "--json")
    assert code == 0, err
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["training"]["train_space"]["patch"] == 4


# ---- High: a torn last record of a journal study is set aside ----------------------------------------
def _journal(tmp_path: Path, trials: int) -> Path:
    path = tmp_path / "j" / "study.log"
    code = main(["search", "--space", "mbconv", "--trials", str(trials), "--storage", f"journal:{path}",
                 "--study", "s", "--out", str(tmp_path / "out"), "--quiet", "--evaluator", "zero-cost",
                 "--evaluator-option", "proxy=flops"])
    assert code == 0
    return path


def test_split_torn_keeps_whole_records() -> None:
    a, b = b'{"op_code":0,"x":1}\n', b'{"op_code":4,"y":2}\n'
    assert split_torn(a + b) == (a + b, b"")
    assert split_torn(a + b'{"op_code":5,"z') == (a, b'{"op_code":5,"z')                    # torn tail
    assert split_torn(a + b'{"op_code":5,"z' + b + a) == (a + b + a, b'{"op_code":5,"z\n')  # appended after
    assert split_torn(a + b"garbage\n" + b) == (a + b, b"garbage\n")


@pytest.mark.parametrize("appended", [False, True])
def test_torn_journal_record_is_set_aside(appended: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          caplog: pytest.LogCaptureFixture) -> None:
    """Issue 29: a search under `ulimit -f` left a half-written last record; the next search appended
    after it and died with a JSONDecodeError, and from then on the study could not be opened. Now the
    fragment is moved to PATH.torn-<time> (named in a warning) and the study opens with its trials.
    `appended`: a journal broken by the old code (a whole record written after the fragment)."""
    path = _journal(tmp_path, 3)
    capsys.readouterr()
    whole = path.read_bytes()
    fragment = b'{"op_code":5,"worker_id":"w","trial_id":3,"sta'
    record = whole.splitlines(keepends=True)[-1]
    path.write_bytes(whole + fragment + (record if appended else b""))
    with caplog.at_level(logging.WARNING, logger="nas"):
        code = main(["search", "--space", "mbconv", "--trials", "5", "--storage", f"journal:{path}", "--study", "s",
                     "--out", str(tmp_path / "out"), "--quiet", "--evaluator", "zero-cost", "--evaluator-option", "proxy=flops"])
    assert code == 0, capsys.readouterr().err
    sides = list(path.parent.glob("study.log.torn-*"))
    assert len(sides) == 1 and sides[0].read_bytes().rstrip(b"\n") == fragment
    assert str(sides[0]) in caplog.text
    assert path.read_bytes().startswith(whole) and all(json.loads(line) for line in path.read_bytes().splitlines())
    assert set_aside_torn_records(path) is None   # whole now


def test_journal_write_on_full_disk_is_one_line_and_the_next_search_opens(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str],
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """`ulimit -f` (a full disk for this process): one line saying disk full, exit 1; then the same
    search without the limit opens the study."""
    path = tmp_path / "study.log"
    cmd = [sys.executable, "-m", "nas", "search", "--space", "mbconv", "--trials", "6", "--storage",
           f"journal:{path}", "--study", "s", "--out", str(tmp_path / "out"), "--quiet", "--evaluator", "zero-cost",
           "--evaluator-option", "proxy=flops"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = subprocess.run(["bash", "-c", 'ulimit -f 3; exec "$@"', "-", *cmd], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
    errors = [line for line in full.stderr.splitlines() if not line.startswith("WARNING")]
    assert errors == ["nas: error: cannot write: disk full for this process (file size limit, ulimit -f, reached)"]
    # where the limit cuts depends on the records' lengths (timestamps): usually inside a record (torn),
    # rarely at a record's end; a torn tail must be set aside, and either way the study opens again
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with caplog.at_level(logging.WARNING):   # the next search, in this process (no limit)
        code, _, err = nas(capsys, *cmd[3:])
    assert code == 0, err
    if torn:
        assert "set aside" in caplog.text and list(tmp_path.glob("study.log.torn-*"))


# ---- High: --torch-threads and --workers are bounded ------------------------------------------------------
@pytest.mark.quick
@pytest.mark.parametrize("argv,text", [
    (["search", "--torch-threads", "1000000"], "--torch-threads 1000000 is more than"),
    (["search", "--torch-threads", "5000"], "--torch-threads 5000 is more than"),
    (["search", "--runner", "ray", "--workers", "1000000"], "--workers 1000000: an embedded Ray"),
    (["search", "--runner", "ray", "--workers", "100000", "--address", "127.0.0.1:1"], "at most 1024"),
])
def test_threads_and_workers_are_bounded(argv: list[str], text: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = nas(capsys, *argv, "--out", str(tmp_path / "run"))
    assert code == 2 and text in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.quick
def test_train_on_ray_workers_bounded_before_ray_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """`nas train --runner ray --workers 100000` kept starting processes; now refused before Ray."""
    from nas.cluster import ray_train
    from nas.core.errors import UsageError
    monkeypatch.setattr("nas.cluster.ray_session._import_ray", lambda: pytest.fail("Ray was started"))
    with pytest.raises(UsageError, match="--workers 100000"):
        ray_train.train_on_ray(100000, None, result="x")
    with pytest.raises(UsageError, match="--torch-threads 100000"):
        ray_train.train_on_ray(2, None, result="x", torch_threads=100000)


# ---- Medium: a write that fails is one line; outputs are checked before the work ---------------------
def _best(tmp_path: Path) -> Path:
    out = tmp_path / "s"
    assert main(["search", "--space", "mbconv", "--trials", "1",
                 "--out", str(out), "--quiet", "--evaluator-option", "proxy=flops"]) == 0
    return out / "best.json"


def _immutable(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i not permitted here")
    return path


@pytest.fixture
def immutable(tmp_path: Path):   # type: ignore[no-untyped-def]
    folder = tmp_path / "frozen"
    yield _immutable(folder)
    subprocess.run(["chattr", "-R", "-i", str(folder)], capture_output=True)


@pytest.mark.parametrize("argv", [
    ["export", "{best}", "--format", "onnx", "--out", "{frozen}/m.onnx"],
    ["export", "{best}", "--format", "torch", "--out", "{frozen}/m.pt"],
    ["export", "{best}", "--format", "json", "--out", "{frozen}/m.json"],
    ["report", "{run}", "--out", "{frozen}/r.md"],
    ["latency", "bundle", "--space", "mbconv", "--out", "{frozen}/bundle"],
    ["bench", "proxies", "--space", "nb201", "--archs", "20", "--out", "{frozen}/p.json"],
])
def test_immutable_output_is_one_line(argv: list[str], tmp_path: Path, immutable: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 29: raw OSError tracebacks (bench proxies after 70 s of work). Now one line, at once."""
    best = _best(tmp_path)
    capsys.readouterr()
    code, _, err = nas(capsys, *[a.format(best=best, run=best.parent, frozen=immutable) for a in argv])
    assert code in (1, 2) and len(err.strip().splitlines()) == 1 and str(immutable) in err, err
    assert "not permitted" in err


def test_train_resume_with_immutable_checkpoint_refused_before_training(tmp_path: Path) -> None:
    from nas.core.errors import UsageError
    from nas.training.retrain import prepare_out
    out = tmp_path / "t"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"x")
    if subprocess.run(["chattr", "+i", str(out / "checkpoint.pt")], capture_output=True).returncode != 0:
        pytest.skip("chattr +i not permitted here")
    try:
        with pytest.raises(UsageError, match="checkpoint.pt cannot be replaced"):
            prepare_out(out)
    finally:
        subprocess.run(["chattr", "-i", str(out / "checkpoint.pt")], capture_output=True)


@pytest.mark.parametrize("fmt", ["onnx", "torch"])
def test_export_on_full_disk_says_disk_full(fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 29: under `ulimit -f` torch said "unexpected pos" and the onnx export fell back to the
    dynamo exporter ("No module named 'onnxscript'"); now one line that says disk full. The file size
    limit is this process's own (`ulimit -f 100`, in-process: Python ignores SIGXFSZ, so a write past it
    fails with EFBIG as in the `nas` command)."""
    import resource
    best = _best(tmp_path)
    import torch  # noqa: F401  (imported before the limit: importing it writes no file then)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100 * 1024, hard))
    try:
        code, _, err = nas(capsys, "export", str(best), "--format", fmt, "--out", str(tmp_path / f"m.{fmt}"))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert code == 1 and err.startswith(f"nas: error: cannot write {tmp_path}/m.{fmt}: disk full"), err
    assert len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(("m.", ".m.", "tmp"))] == []


@pytest.mark.quick
def test_export_out_with_trailing_slash_makes_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """README: `nas export runs/p1-cpu/model.pt --format onnx --out deploy/` refused a missing folder."""
    best = _best(tmp_path)
    code, out, err = nas(capsys, "export", str(best), "--format", "json", "--out", f"{tmp_path}/deploy/")
    assert code == 0, err
    assert json.loads((tmp_path / "deploy" / "model.json").read_text())["space"] == "mbconv"


# ---- Medium: a broken config.json in --out; --device cuda without CUDA ---------------------------------
@pytest.mark.quick
@pytest.mark.parametrize("text,message", [('{"space": "mbc', "cannot read"), ("[1, 2]", "is not a search config")])
def test_broken_config_in_out_is_one_line(text: str, message: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 29: a truncated config.json, or one holding a list, then `nas search --out` (not --resume):
    JSONDecodeError / AttributeError tracebacks."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(text)
    code, _, err = nas(capsys, "search", "--trials", "1", "--out", str(tmp_path / "run"),
                       "--evaluator-option", "proxy=flops")
    assert code == 2 and message in err and "--no-resume" in err and len(err.strip().splitlines()) == 1


def test_cuda_without_cuda_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = nas(capsys, "search", "--device", "cuda", "--trials", "1", "--out", str(tmp_path / "run"))
    assert code == 2 and "CUDA is not available" in err and not (tmp_path / "run").exists()


# ---- --target cpu: a candidate file reuses the space's table; vit_resnas profiles on first use --------
def test_candidate_file_reuses_the_cpu_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """Issue 29: every candidates file re-profiled the host table under a new name (the file was part
    of the options naming it). Also: vit_resnas profiles on first use, saying how long it takes."""
    from latency import host_tables
    from latency.table import LatencyTable
    from latency.targets import lut_model
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NAS_AUTO_PROFILE", "1")
    profiled: list[str] = []

    def profile(space, path, progress):   # type: ignore[no-untyped-def]
        profiled.append(path.name)
        table = LatencyTable(space.name, host_tables.net_options(space), {"source": "measured"})
        for spec in space.all_layers():
            table.add(spec.key, 0.5)
        table.save(path)
        return table

    monkeypatch.setattr(host_tables, "_profile", profile)
    plain = get_space("nb201")
    lines = [plain.format(plain.sample(__import__("numpy").random.default_rng(s))) for s in range(3)]
    for i in range(2):
        (tmp_path / f"c{i}.txt").write_text("\n".join(lines[i:i + 2]) + "\n")
        lut_model("cpu", get_space("nb201", candidates=str(tmp_path / f"c{i}.txt")))
    lut_model("cpu", plain)
    assert len(profiled) == 1
    with caplog.at_level(logging.WARNING):
        lut_model("cpu", get_space("vit_resnas", resolution=112))   # no shipped table at these options
    assert profiled[-1].startswith("vit_resnas") and "it takes about 2 minutes" in caplog.text


# ---- --candidates: no repeats, bounded, clear about folders and binary files ----------------------------
def _nb201_lines(n: int) -> list[str]:
    import numpy as np
    space = get_space("nb201")
    rng = np.random.default_rng(0)
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen[space.format(space.sample(rng))] = None
    return list(seen)


def test_fewer_candidates_than_trials_evaluates_each_once(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Issue 29: a one-line file gave "best of 10 trials" (the same arch 10 times)."""
    (tmp_path / "c.txt").write_text("\n".join(_nb201_lines(2)) + "\n")
    with caplog.at_level(logging.WARNING):
        code, out, err = nas(capsys, "search", "--space", "nb201", "--candidates", str(tmp_path / "c.txt"),
                             "--trials", "10", "--out", str(tmp_path / "run"), "--evaluator-option", "proxy=flops", "--json")
    assert code == 0, err
    assert json.loads(out)["trials"] == 2 and "holds 2 archs; 2 trials" in caplog.text


@pytest.mark.quick
@pytest.mark.parametrize("make,text", [
    (lambda p: p.mkdir(), "a folder, not a file"),
    (lambda p: p.write_bytes(bytes(range(128, 256)) * 20), "is not text (UTF-8)"),
    (lambda p: p.write_text("x\n" * 100_001), "lists more than 100000 archs"),
    (lambda p: p.write_text("x" * 70_000), "longer than 65536 characters"),
])
def test_bad_candidate_files_are_one_line(make, text: str, tmp_path: Path,   # type: ignore[no-untyped-def]
                                          capsys: pytest.CaptureFixture[str]) -> None:
    make(tmp_path / "c")
    code, _, err = nas(capsys, "search", "--space", "nb201", "--candidates", str(tmp_path / "c"),
                       "--out", str(tmp_path / "run"))
    assert code == 2 and text in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.quick
def test_candidate_file_with_bom_is_read(tmp_path: Path) -> None:
    from search_spaces.candidates import read_candidates
    lines = _nb201_lines(2)
    (tmp_path / "c.txt").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    assert len(read_candidates(get_space("nb201"), tmp_path / "c.txt")) == 2


# ---- calibrate: a bounded, streaming read; BOM accepted; absurd latencies refused -------------------------
def _measured_rows(n: int) -> list[str]:
    import numpy as np
    from latency.bench_devices import nb201_latency
    data = nb201_latency()
    blocks = sorted(data.index)
    idx = np.random.default_rng(0).choice(len(blocks), n, replace=False)
    return [f"{blocks[i]},{data.ms['pixel3'][blocks[i]]}" for i in idx]


def test_calibrate_stops_at_the_first_bad_line_of_an_endless_pipe(tmp_path: Path) -> None:
    """Issue 29: calibrate read the whole CSV before validating (121 MB: 720 MB RSS, 71 s, then line
    14 refused; an endless pipe: MemoryError). Now it stops at the bad line."""
    import threading
    from nas.core.errors import UsageError
    from latency.calibrate import read_measurements
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    rows = _measured_rows(12)

    def endless() -> None:
        try:
            with open(fifo, "w") as fh:
                fh.write("arch,ms\n" + "\n".join(rows) + "\nnot-an-arch,1\n")
                while True:
                    fh.write("x" * 1000 + "\n")
        except (BrokenPipeError, OSError):
            pass

    writer = threading.Thread(target=endless, daemon=True)
    writer.start()
    with pytest.raises(UsageError, match="line 14: 'not-an-arch'"):
        read_measurements(fifo, get_space("nb201"))
    writer.join(10)
    assert not writer.is_alive()


@pytest.mark.parametrize("ms,ok", [("1e308", False), ("1e-300", False), ("0.5", True)])
def test_calibrate_latency_range_and_bom(ms: str, ok: bool, tmp_path: Path) -> None:
    from nas.core.errors import UsageError
    from latency.calibrate import read_measurements
    rows = _measured_rows(6)
    rows[2] = rows[2].rsplit(",", 1)[0] + "," + ms
    path = tmp_path / "m.csv"
    path.write_text("\ufeffarch,ms\n" + "\n".join(rows) + "\n", encoding="utf-8")   # BOM: was refused
    if ok:
        assert len(read_measurements(path, get_space("nb201"))) == 6
    else:
        with pytest.raises(UsageError, match=f"line 4: latency '{ms}' ms is outside"):
            read_measurements(path, get_space("nb201"))


def test_calibrate_out_folder_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.csv"
    path.write_text("arch,ms\n" + "\n".join(_measured_rows(6)) + "\n")
    code, _, err = nas(capsys, "latency", "calibrate", "--space", "nb201", "--measurements", str(path),
                       "--out", str(tmp_path))
    assert code == 2 and "is a folder" in err


# ---- nas train: allocations estimated and refused with the sizes ---------------------------------------
@pytest.mark.quick
def test_training_memory_estimate_refuses_with_the_sizes() -> None:
    """Issue 29: `-o resolution=1024 --batch-size 64` and `--dataset synthetic:1000000000000` ended in
    allocator tracebacks. The estimate: float32 images (digits: 1797 at 224 px = 1.08 GB) plus one
    batch's layer outputs x3."""
    from nas.core.errors import UsageError
    from nas.training.memory import check_memory, estimate
    space = get_space("mbconv")
    arch = space.parse_any("single-path-nas")
    need = estimate(space, arch, "digits", 64)
    assert need["dataset"] == 1797 * 3 * 224 * 224 * 4
    outputs = sum(__import__("math").prod(s.output_shape) for s in space.layers(arch))
    assert need["activations"] == 3 * 4 * 64 * outputs
    assert check_memory(space, arch, "digits", 64, available=2 ** 40) == need
    with pytest.raises(UsageError, match=r"about .* GB of memory \(dataset synthetic:1000000000000"):
        check_memory(space, arch, "synthetic:1000000000000", 64, available=2 ** 40)
    with pytest.raises(UsageError, match="activations of a batch of 64"):
        check_memory(space, arch, "digits", 64, available=2 ** 30)
    assert check_memory(space, arch, "digits", 64, device="cuda", available=2 ** 31)   # activations on the GPU


def test_nas_train_refuses_a_huge_synthetic_dataset_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = nas(capsys, "train", "--space", "mbconv", "--arch", "single-path-nas", "-o", "resolution=32",
                       "--dataset", "synthetic:1000000000000", "--out", str(tmp_path / "t"))
    assert code == 2 and "training would need about" in err and len(err.strip().splitlines()) == 1


# ---- nas train: locks its --out; torchrun ranks stop when their agent dies ---------------------------------
def test_nas_train_locks_its_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 29: two `nas train --out SAME` ran together (as the torchrun ranks left by a killed agent did)."""
    from nas.store.lock import run_lock
    with run_lock(f"jsonl:{tmp_path / 't' / 'checkpoint.pt'}", None):
        code, _, err = nas(capsys, "train", "--space", "mbconv", "--arch", "single-path-nas", "-o", "resolution=32",
                           "--dataset", "synthetic:48", "--epochs", "1", "--out", str(tmp_path / "t"))
    assert code == 1 and "is in use by another run" in err and not (tmp_path / "t" / "checkpoint.pt").exists()


def test_torchrun_rank_stops_when_its_agent_is_killed(tmp_path: Path) -> None:
    """A rank (child) that called stop_with_agent gets SIGTERM when its agent (parent) is SIGKILLed."""
    import signal
    import time
    child = ("import os, sys, time; sys.path.insert(0, sys.argv[1]); from nas.training.distributed import "
             "stop_with_agent; assert stop_with_agent(); open(sys.argv[2], 'w').write(str(os.getpid())); time.sleep(60)")
    agent = (f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}, sys.argv[1], "
             f"sys.argv[2]]); time.sleep(60)")
    pid_file = tmp_path / "rank.pid"
    env = {**os.environ, "TORCHELASTIC_RUN_ID": "test"}
    parent = subprocess.Popen([sys.executable, "-c", agent, str(ROOT), str(pid_file)], env=env)
    try:
        for _ in range(200):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.05)
        rank = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        for _ in range(100):
            try:
                os.kill(rank, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(rank, signal.SIGKILL)
            pytest.fail("the rank outlived its agent")
    finally:
        parent.kill()


# ---- nas latency predict --onnx: onnxruntime's errors and hostile graphs are one line ---------------------
def _onnx(tmp_path: Path, name: str) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    opsets = [helper.make_opsetid("", 17)]
    inputs, inits = [x], []
    if name == "opset99":
        nodes, opsets = [helper.make_node("Relu", ["x"], ["y"])], [helper.make_opsetid("", 99)]
    elif name == "two-inputs":
        inputs.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 3, 8, 8]))
        nodes = [helper.make_node("Add", ["x", "x2"], ["y"])]
    elif name == "cyclic":
        nodes = [helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
                 helper.make_node("Relu", ["a"], ["y"])]
    elif name == "custom":
        nodes = [helper.make_node("Foo", ["x"], ["y"], domain="my.custom")]
        opsets.append(helper.make_opsetid("my.custom", 1))
    else:   # "big": a 1,3,4096,4096 input to a 256-channel conv: a 16 GB output
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4096, 4096])]
        inits = [helper.make_tensor("w", TensorProto.FLOAT, [256, 3, 3, 3], np.zeros(256 * 27, np.float32))]
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", inputs, [y], inits)
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


@pytest.mark.parametrize("name,target,text", [
    ("opset99", "cpu", "uses opset 99"), ("opset99", "pixel1", "uses opset 99"),
    ("two-inputs", "cpu", "has 2 inputs"), ("two-inputs", "pixel1", "has 2 inputs"),
    ("cyclic", "cpu", "a cycle, or nodes out of topological order"),
    ("custom", "cpu", "onnxruntime cannot run"),
    ("big", "cpu", "more than this machine can time it with"),
])
def test_hostile_onnx_is_one_line(name: str, target: str, text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 29: onnxruntime errors passed through as tracebacks (cpu); opset 99 was costed silently and a
    second input ignored (pixel1); a cyclic graph said "give --input-shape"."""
    if name == "big":   # whatever this machine has: the 16 GB tensor is more than 4 GB
        monkeypatch.setattr("nas.core.system.available_bytes", lambda: 4 << 30)
    code, _, err = nas(capsys, "latency", "predict", "--onnx", str(_onnx(tmp_path, name)), "--target", target)
    assert code in (1, 2) and text in err and len(err.strip().splitlines()) == 1, err


def test_huge_input_shape_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = nas(capsys, "latency", "predict", "--onnx", str(_onnx(tmp_path, "big")), "--target", "cpu",
                       "--input-shape", "1,3,100000,100000")
    assert code == 2 and "111.8 GB as float32" in err


def test_input_shape_over_a_static_one_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               caplog: pytest.LogCaptureFixture) -> None:
    path = _onnx(tmp_path, "opset99")
    import onnx
    model = onnx.load(str(path))
    model.opset_import[0].version = 17
    onnx.save(model, str(path))
    with caplog.at_level(logging.WARNING):
        code, out, err = nas(capsys, "latency", "predict", "--onnx", str(path), "--target", "pixel1",
                             "--input-shape", "1,3,16,16")
    assert code == 0, err
    assert "replaces the static input shape 1,3,8,8" in caplog.text


# ---- SIGTERM during --runner ray: exit 143, not a SystemError traceback ---------------------------------
@pytest.mark.quick
def test_interrupt_inside_ray_wait_is_raised_as_itself() -> None:
    """Issue 29: SIGTERM arrived while Ray's C wait ran and came back as `SystemError ...
    CoreWorker.wait` (exit 1, traceback); the interrupt inside is raised instead (the CLI: 143)."""
    from nas.cli.main import Terminated
    from nas.pipeline.ray_runner import _reraise_interrupt
    wrapped = SystemError("<method 'wait' of 'ray._raylet.CoreWorker' objects> returned a result with an exception set")
    wrapped.__context__ = Terminated()
    with pytest.raises(Terminated):
        _reraise_interrupt(wrapped)
    plain = SystemError("other")
    plain.__context__ = ValueError("x")
    _reraise_interrupt(plain)   # not an interrupt: the caller re-raises the SystemError


# ---- nas list: a catalogue, without the search pipeline ----------------------------------------------------
@pytest.mark.quick
def test_nas_list_does_not_import_the_search_pipeline() -> None:
    """Issue 29: `nas list` imported numpy and the search pipeline (1.2 s CPU). Neither the pipeline
    (nas.api, nas.pipeline.search), numpy (nas.core.lazy: the modules `nas list` reads import it on first
    use), torch, onnxruntime nor optuna is imported, and no measured table's rows are read; each section
    and --json the same."""
    code = ("import sys, io, contextlib; from nas.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    rc = [main(a) for a in (['list'], ['list', 'targets'], ['list', 'strategies', '--verbose'], "
            "['list', '--json'])]\n"
            "bad = [m for m in ('nas.api', 'nas.pipeline.search', 'numpy', 'torch', 'onnxruntime', 'optuna') "
            "if m in sys.modules]\n"
            "from latency.bench_devices import nb201_latency\n"
            "print(rc, bad, nb201_latency.cache_info().currsize if hasattr(nb201_latency, 'cache_info') else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.stdout.strip() == "[0, 0, 0, 0] [] 0", run.stdout + run.stderr


def test_lazy_numpy_is_numpy_once_used() -> None:
    """The stand-in of nas.core.lazy gives numpy's own objects (functions, submodules, constants)."""
    import numpy

    from nas.core.lazy import LazyModule
    lazy = LazyModule("numpy")
    assert lazy.zeros is numpy.zeros and lazy.random.default_rng is numpy.random.default_rng
    assert lazy.int64 is numpy.int64 and lazy.linalg is numpy.linalg and lazy.pi == numpy.pi
    with pytest.raises(AttributeError):
        lazy.no_such_numpy_name


@pytest.mark.quick
def test_list_strategies_verbose_says_what_each_option_does(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 29: `nas list strategies --verbose` gave `name = default` with no word on what each does."""
    from nas.pipeline.catalogue import OPTION_HELP, list_catalogue
    code, out, _ = nas(capsys, "list", "strategies", "--verbose")
    assert code == 0
    options = {k for row in list_catalogue("strategies") for k in row["options"]}
    assert options <= set(OPTION_HELP), sorted(options - set(OPTION_HELP))
    assert "mutation_rate = 2.0" in out and "evolution: genes changed per child on average" in out


def test_nb201_tabular_summary_prints_params_and_macs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 29: an nb201 arch printed `params: 0.00 M  MACs: 0 M` (the tabular evaluator builds no net).
    Now the same figures as `nas show` gives for that arch."""
    code, out, err = nas(capsys, "search", "--space", "nb201", "-o", "candidates=naslib", "--evaluator", "tabular",
                         "--trials", "3", "--out", str(tmp_path / "run"))
    assert code == 0, err
    arch = json.loads((tmp_path / "run" / "best.json").read_text())["arch"]
    code, shown, _ = nas(capsys, "show", "--space", "nb201", "--arch", arch, "--json")
    info = json.loads(shown)
    assert f"params: {info['params_m']:.2f} M   MACs: {info['macs_m']:.0f} M" in out
    assert info["params_m"] > 0.1


def test_summary_pareto_table_is_report_s_and_keeps_the_fast_end(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 29: the search summary's table hid the fast end of the front and differed from `nas report`
    (9 vs 7 "left out")."""
    run = tmp_path / "run"
    code, out, err = nas(capsys, "search", "--space", "nb201", "--strategy", "nsga2", "--trials", "80",
                         "--evaluator-option", "proxy=params", "--out", str(run), "--quiet")
    assert code == 0, err
    summary_table = out[out.index("Pareto front"):].strip()
    code, rep, err = nas(capsys, "report", str(run), "--out", str(tmp_path / "rep"))
    assert code == 0, err
    report_table = rep[rep.index("Pareto front"):rep.index("\nwrote")].strip()
    assert summary_table == report_table
    rows = [line.split() for line in summary_table.splitlines()[2:] if line.strip()[:1].isdigit()]
    lat = [float(r[2]) for r in rows]
    assert lat == sorted(lat)   # fastest first
    import csv
    with open(next((tmp_path / "rep").glob("*.csv"))) as fh:
        every = [float(r["latency_ms"]) for r in csv.DictReader(fh) if r.get("latency_ms")]
    assert lat[0] == pytest.approx(min(every), abs=1e-3)   # the fastest trial of all (it is on the front)
    assert "left out" not in summary_table or len(rows) == 10


@pytest.mark.quick
def test_readme_api_list_names_every_public_function() -> None:
    """Issue 29: the README's API list omitted nas.api_latency.predict_onnx, calibrate, predict_archs."""
    import inspect
    import re
    import nas.api
    import nas.api_latency
    text = (ROOT / "README.md").read_text()
    para = text[text.index("`nas.api` (all importable from `nas`) holds"):]
    para = para[:para.index("The pipeline's steps")]
    named = set(re.findall(r"`(\w+)`", para))
    for module in (nas.api, nas.api_latency):
        public = {n for n, f in vars(module).items() if inspect.isfunction(f) and not n.startswith("_")
                  and f.__module__ == module.__name__}
        public |= {n for n in getattr(module, "__all__", ()) if callable(getattr(module, n))
                   and not inspect.isclass(getattr(module, n))}
        assert public <= named, (module.__name__, sorted(public - named))


# ---- rough2: nas train --resume with another --epochs; the recipe mismatch names the keys -------------------
TRAIN_SMALL = ("train", "--space", "mbconv", "--arch", "single-path-nas", "-o", "resolution=32",
               "-o", "width_mult=0.25", "--dataset", "synthetic:60", "--batch-size", "20", "--warmup-epochs", "0.5",
               "--quiet")


@pytest.mark.quick
def test_resume_with_other_epochs_is_refused_or_said(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Issue 29: `--resume --epochs 1` on a 2-epoch checkpoint said "epochs: 1" with 2 epochs of history;
    `--resume --epochs 4` on a finished 2-epoch run re-started the cosine schedule without a word; a recipe
    mismatch printed two 12-key dicts."""
    import torch
    out = str(tmp_path / "t")
    code, _, err = nas(capsys, *TRAIN_SMALL, "--epochs", "2", "--out", out)
    assert code == 0, err
    ck = torch.load(tmp_path / "t" / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 2 and ck["epochs"] == 2 and ck["schedule_changes"] == []
    code, _, err = nas(capsys, *TRAIN_SMALL, "--epochs", "1", "--out", out, "--resume")
    assert code == 2 and "--epochs 1" in err and "already has 2 epochs" in err and len(err.strip().splitlines()) == 1
    code, _, err = nas(capsys, *TRAIN_SMALL, "--epochs", "2", "--lr", "0.2", "--out", out, "--resume")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "recipe differs in lr (checkpoint 0.05, this run 0.2)" in err and "batch_size" not in err
    with caplog.at_level(logging.WARNING):
        code, text, err = nas(capsys, *TRAIN_SMALL, "--epochs", "4", "--out", out, "--resume")
    assert code == 0, err
    assert "from 2 to 4 epochs after epoch 2" in caplog.text and "re-stretched" in caplog.text
    assert "schedule changed after epoch 2: from 2 to 4 epochs" in text
    result = json.loads((tmp_path / "t" / "result.json").read_text())
    assert result["schedule_changes"] == [{"after_epoch": 2, "epochs_from": 2, "epochs_to": 4}]
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4]
    ck = torch.load(tmp_path / "t" / "checkpoint.pt", weights_only=True)
    assert ck["epochs"] == 4 and ck["schedule_changes"] == result["schedule_changes"]


# ---- rough2: what an interrupted nas train / nas bench says (there are no trials) ----------------------------
@pytest.mark.quick
@pytest.mark.parametrize("signal_name", ["KeyboardInterrupt", "Terminated"])
def test_interrupted_train_names_its_checkpoint(signal_name: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 29: SIGTERM of `nas train` said "finished trials are saved - run the same command again"."""
    from nas.cli.main import Terminated
    exc = KeyboardInterrupt if signal_name == "KeyboardInterrupt" else Terminated
    rc = 130 if exc is KeyboardInterrupt else 143

    def stop(*a: object, **k: object) -> None:
        raise exc()

    monkeypatch.setattr("nas.api.train", stop)
    base = ("train", "--space", "mbconv", "--arch", "single-path-nas", "--quiet")
    code, _, err = nas(capsys, *base)
    assert code == rc and err.strip() == "nas: interrupted; nothing was saved (no --out)"
    out = tmp_path / "t"
    out.mkdir()
    code, _, err = nas(capsys, *base, "--out", str(out))
    assert code == rc and "no epoch had finished" in err and "trials" not in err
    (out / "checkpoint.pt").write_bytes(b"x")
    code, _, err = nas(capsys, *base, "--out", str(out))
    assert code == rc and f"{out / 'checkpoint.pt'} - run the same command with --resume" in err
    assert "trials" not in err


@pytest.mark.quick
def test_interrupted_bench_says_nothing_was_saved(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 29: a stopped `nas bench` said "finished trials are saved - run the same command again to resume"."""
    from nas.cli.main import Terminated

    def stop(*a: object, **k: object) -> None:
        raise Terminated()

    monkeypatch.setattr("nas.bench.strategies.strategy_benchmark", stop)
    code, _, err = nas(capsys, "bench", "strategies", "--space", "nb201", "--quiet")
    assert code == 143 and "nothing was saved" in err and "trials" not in err and "resume" not in err


# ---- rough2: nas bench budgets and seeds are bounded ---------------------------------------------------------
@pytest.mark.quick
@pytest.mark.parametrize("argv,text", [
    (["strategies", "--space", "nb201", "--budgets", "50,10000000"], "--budgets 10000000 is too large: at most 10000"),
    (["strategies", "--space", "nb201", "--seeds", "100000000"], "--seeds 100000000 is too many: at most 1000"),
    (["budgets", "--seeds", "100000000"], "--seeds 100000000 is too many: at most 1000"),
])
def test_bench_budgets_and_seeds_are_bounded(argv: list[str], text: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 29: `nas bench strategies --budgets 10000000` was accepted silently (and ran for ever)."""
    code, _, err = nas(capsys, "bench", *argv, "--quiet")
    assert code == 2 and text in err, err
    assert len(err.strip().splitlines()) == 1


# ---- rough2: a busy --storage SQLite file is named as the file, not as its folder -----------------------------
@pytest.mark.quick
def test_busy_sqlite_storage_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 29: a second study in one SQLite --storage file said "<parent folder> is in use by another search"."""
    from nas.store.lock import run_lock
    db = tmp_path / "shared" / "studies.db"
    db.parent.mkdir()
    with run_lock(f"sqlite:///{db}", None):   # the first search (study a) runs
        code, _, err = nas(capsys, "search", "--space", "nb201", "--strategy", "random", "--trials", "2",
                           "--storage", f"sqlite:///{db}", "--study", "b", "--out", str(tmp_path / "b"), "--quiet")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert f"the storage file {db} is in use by another search" in err and "another --storage file" in err
    assert f"{db.parent} is in use" not in err


# ---- rough2: stale hidden temp files of killed writes are cleaned on the next run ----------------------------
@pytest.mark.quick
def test_stale_temp_files_of_killed_writes_are_cleaned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 29: a SIGKILL between write and rename left `.NAME.XXXXXXXX.onnx/.pt` and `.checkpoint.pt.XXXXXXXX`
    that accumulated run after run."""
    from nas.core.files import STALE_TEMP_S, atomic_write_text, clean_stale_temps
    old = __import__("time").time() - STALE_TEMP_S - 60
    best = _best(tmp_path)
    d = tmp_path / "out"
    d.mkdir()

    def leftover(name: str, age: float | None = old) -> Path:
        p = d / name
        p.write_bytes(b"half a file")
        if age is not None:
            os.utime(p, (age, age))
        return p

    stale = [leftover(".checkpoint.pt.k2m_9xqz"), leftover(".model.onnx.ab12cd34.onnx"),
             leftover(".model.pt.zz00yy11.pt"), leftover("..model.onnx.tmp.onnx.x1y2z3w4.onnx")]
    fresh = leftover(".model.onnx.qq12ww34.onnx", age=None)            # a live writer's: kept
    other = [leftover(".model.onnx.not-ours"), leftover(".gitignore"),   # not temp names of ours: kept
             leftover(".result.json.ab12cd3")]
    assert clean_stale_temps(d / "checkpoint.pt") == [stale[0]]
    stale.append(leftover(".checkpoint.pt.a1b2c3d4"))
    atomic_write_text(d / "result.json", "{}\n")            # an atomic write cleans its own stale temps
    code, _, err = nas(capsys, "export", str(best), "--format", "onnx", "--out", str(d / "model.onnx"))
    assert code == 0, err
    code, _, err = nas(capsys, "export", str(best), "--format", "torch", "--out", str(d / "model.pt"))
    assert code == 0, err
    from nas.training.retrain import prepare_out
    prepare_out(d)                                                # `nas train --out d` cleans its files' temps
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and all(p.exists() for p in other)
    assert sorted(p.name for p in d.iterdir()) == sorted(
        [fresh.name, *(p.name for p in other), "result.json", "model.onnx", "model.pt"])
