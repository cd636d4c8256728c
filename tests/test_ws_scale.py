"""Scaling weight-sharing training out (issue 30 item 3): the mid-training state under torchrun (gloo,
2 processes) - rank 0 alone writes it, with each rank's own part - and a stopped 2-process run continued
by 2 processes ends with the uninterrupted 2-process history and weights; a 2-process state is refused
by one process."""
from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from nas.core.errors import UsageError
from nas.training.resume import StepCheckpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny(n: int, res: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    templates = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(9))
    templates = templates.repeat_interleave(res // 4, 2).repeat_interleave(res // 4, 3)
    return templates[y] + 0.5 * torch.randn(n, 3, res, res, generator=g), y


class Stop(StepCheckpoint):
    """Raises KeyboardInterrupt right after global step `at` (on every rank alike)."""

    def __init__(self, *args: Any, at: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at = at

    def after_step(self, epoch: int, step: int, *args: Any, **kwargs: Any) -> None:
        super().after_step(epoch, step, *args, **kwargs)
        if step == self.at:
            raise KeyboardInterrupt


def _spaces() -> tuple[Any, Any]:
    from search_spaces.catalog import get_space
    return (get_space("mbconv", resolution=32, width_mult=0.25, num_classes=4),
            get_space("nasnet", variant="darts", channels=4, cells=1, num_classes=4, resolution=8))


def _supernet(ck: StepCheckpoint, dist: Any) -> tuple[list[dict[str, Any]], torch.nn.Module]:
    from nas.supernet import build_supernet
    from nas.supernet.trainer import SandwichConfig, train_supernet
    torch.manual_seed(0)
    net = build_supernet(_spaces()[0])
    cfg = SandwichConfig(epochs=2, batch_size=16, random_paths=1)
    return train_supernet(net, tiny(48, 32), cfg, checkpoint=ck, dist=dist), net


def _single_path(ck: StepCheckpoint, dist: Any) -> tuple[list[dict[str, Any]], torch.nn.Module]:
    from latency.targets import lut_model
    from nas.differentiable.single_path import LatencyTerm, SinglePathConfig, SinglePathNet, train_single_path
    from search_spaces.catalog import get_space
    space = _spaces()[0]
    torch.manual_seed(0)
    net = SinglePathNet(space)
    cfg = SinglePathConfig(epochs=2, batch_size=16, lam=1.0, latency_ms=40.0, seed=0, warmup_epochs=0)
    term = LatencyTerm.from_lut(space, lut_model("pixel1", get_space("mbconv")))
    return train_single_path(net, tiny(48, 32), term, cfg, checkpoint=ck, dist=dist), net


def _darts(ck: StepCheckpoint, dist: Any) -> tuple[list[dict[str, Any]], torch.nn.Module]:
    from nas.differentiable.darts import DartsConfig, DartsNet, train_darts
    torch.manual_seed(0)
    net = DartsNet(_spaces()[1])
    cfg = DartsConfig(epochs=2, batch_size=8, warmup_epochs=0)
    return train_darts(net, tiny(24, 8), tiny(16, 8, 1), cfg, checkpoint=ck, dist=dist), net


def _differentiable(ck: StepCheckpoint, dist: Any) -> tuple[list[dict[str, Any]], torch.nn.Module]:
    from nas.differentiable.proxyless import ArchPolicy, ProxylessConfig, train_proxyless
    from nas.supernet import build_supernet
    space = _spaces()[0]
    torch.manual_seed(0)
    net, policy = build_supernet(space), ArchPolicy(space)
    hist = train_proxyless(net, policy, tiny(48, 32), tiny(16, 32, 1), ProxylessConfig(epochs=2, batch_size=16),
                           lambda a: float(len(a.genes)), None, checkpoint=ck, dist=dist)
    return hist, torch.nn.ModuleDict({"net": net, "policy": policy})


TRAINERS: dict[str, Callable[[StepCheckpoint, Any], Any]] = {   # each: 2 epochs of 3 steps
    "supernet": _supernet, "single-path": _single_path, "darts": _darts, "differentiable": _differentiable}


def _rank_main(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    import nas.training.distributed as D
    torch.set_num_threads(1)
    ctx = D.setup("cpu")
    out: dict[str, Any] = {}
    for name, trainer in TRAINERS.items():
        whole, net = trainer(StepCheckpoint(None, {}, dist=ctx), ctx)
        path = Path(folder) / f"{name}.state.pt"
        meta = {"run": name, "world_size": 2}
        try:   # saved at steps 2, 3 (end of epoch 1) and 4; step 5 is lost
            trainer(Stop(path, meta, every=2, at=5, dist=ctx), ctx)
        except KeyboardInterrupt:
            pass
        D.barrier(ctx)
        saved = torch.load(path, weights_only=True) if path.is_file() else None
        ck = StepCheckpoint(path, meta, every=2, dist=ctx)
        hist, again = trainer(ck, ctx)
        out[name] = {"whole": whole, "resumed_history": hist, "resumed": ck.resumed,
                     "ranks_in_file": len(saved["ranks"]) if saved else None,
                     "net": {k: v.detach().clone() for k, v in net.state_dict().items()},
                     "again": {k: v.detach().clone() for k, v in again.state_dict().items()}}
    torch.save(out, Path(folder) / f"rank{rank}.pt")
    D.teardown(ctx)


def _same_history(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for k in ra:
            if k != "seconds":
                assert (math.isclose(ra[k], rb[k], rel_tol=1e-5, abs_tol=1e-6) if isinstance(ra[k], float)
                        else ra[k] == rb[k]), (k, ra[k], rb[k])


@pytest.mark.slow
def test_two_rank_training_stopped_and_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    import torch.multiprocessing as mp
    mp.spawn(_rank_main, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for name in TRAINERS:
        for r in ranks:
            got = r[name]
            assert got["ranks_in_file"] == 2, name     # one file, written by rank 0, a part for each rank
            assert got["resumed"] == {"step": 4, "steps": 6, "epoch": 2,
                                      "checkpoint": str(tmp_path / f"{name}.state.pt")}, name
            _same_history(got["whole"], got["resumed_history"])
            for k, v in got["net"].items():   # each rank's own BatchNorm statistics came back too
                torch.testing.assert_close(v, got["again"][k], rtol=1e-5, atol=1e-6, msg=f"{name} {k}")
    # the ranks' BN statistics differ (each normalises its half batch): a shared copy would not do
    bn = [k for k in ranks[0]["supernet"]["net"] if k.endswith("running_mean")]
    assert not all(torch.equal(ranks[0]["supernet"]["net"][k], ranks[1]["supernet"]["net"][k]) for k in bn)
    # a state written by two processes is refused by one, naming the count, and is left as it was
    path = tmp_path / "supernet.state.pt"
    before = path.read_bytes()
    with pytest.raises(UsageError, match="written by 2 data-parallel processes and this run has 1"):
        _supernet(StepCheckpoint(path, {"run": "supernet", "world_size": 2}, every=2), None)
    assert path.read_bytes() == before


# ---- whole searches: --runner ray --workers 2 against one process ------------------------------------------
@pytest.mark.slow
def test_supernet_search_on_two_ray_workers_matches_one(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys
    from latency.devices.pixel1 import build_table
    from search_spaces.catalog import get_space
    root = Path(__file__).resolve().parents[1]
    table = build_table(get_space("mbconv", resolution=32, width_mult=0.25)).save(tmp_path / "mb32.json")
    args = ["search", "--space", "mbconv", "-o", "resolution=32", "-o", "width_mult=0.25", "--target", str(table),
            "--strategy", "supernet", "--dataset", "synthetic:256", "--epochs", "2", "--batch-size", "32", "--trials",
            "6", "--seed", "1", "--strategy-option", "random_paths=1", "--strategy-option", "calib_batches=2",
            "--strategy-option", "population=3", "--strategy-option", "sample_size=2", "--torch-threads", "1",
            "--quiet", "--json"]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, extra in (("one", []), ("two", ["--runner", "ray", "--workers", "2"])):
        done = subprocess.run([sys.executable, "-m", "nas.cli", *args, *extra, "--out", name], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = json.loads(done.stdout)
    one, two = runs["one"], runs["two"]
    h1, h2 = one["training"]["history"], two["training"]["history"]
    assert len(h1) == len(h2) == 2 and all(h["samples"] == h["distinct"] == 256 for h in h1 + h2)
    assert "distributed" not in one["training"] and two["training"]["distributed"]["world_size"] == 2
    # the same tolerance as torchrun's test (tests/test_distributed_search.py): per-rank BatchNorm
    assert abs(h1[0]["loss"] - h2[0]["loss"]) <= 0.05 * h1[0]["loss"] and abs(h1[1]["loss"] - h2[1]["loss"]) <= 0.3
    assert one["trials"] == two["trials"] == 6 and abs(one["metrics"]["accuracy"] - two["metrics"]["accuracy"]) <= 0.15
    # the same files (sqlite's -wal/-shm aside: the Ray process holding the store is ended, not exited)
    assert _names(tmp_path / "one") == _names(tmp_path / "two")
    assert json.loads((tmp_path / "two" / "best.json").read_text())["arch"] == two["arch"]


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(("-wal", "-shm")))


# ---- bad input: one line, exit 2, nothing overwritten ------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (["--runner", "ray"], "trains on --workers N processes: give --workers"),
    (["--runner", "ray", "--workers", "2", "--batch-size", "33"], "batch size 33 does not divide over 2 processes"),
])
def test_ray_weight_sharing_bad_input_is_one_line_before_ray_starts(
        extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from nas.cli.main import main
    # an import of ray now fails (another test may have imported it already): the refusal must come first
    monkeypatch.setitem(sys.modules, "ray", None)
    code = main(["search", "--space", "mbconv", "--target", "pixel1", "--strategy", "supernet", "--dataset",
                 "synthetic:32", "--quiet", "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def _files(folder: Path) -> dict[str, bytes]:
    scratch = (".lock", "-shm", "-wal")   # the lock and sqlite's own scratch files aside
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.endswith(scratch)}


@pytest.mark.slow
def test_bad_checkpoints_and_settings_are_one_line_exit_2_nothing_overwritten(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli.main import main
    from nas.training.resume import FORMAT
    from test_resume_kill import tiny_table
    table = tiny_table(tmp_path / "t.json")
    out = tmp_path / "run"
    cmd = ["search", "--space", "mbconv", "-o", "width_mult=0.25", "-o", "resolution=32", "-o", "num_classes=10",
           "--target", str(table), "--strategy", "supernet", "--dataset", "synthetic:64", "--epochs", "1",
           "--batch-size", "16", "--trials", "2", "--strategy-option", "calib_batches=1", "--strategy-option",
           "random_paths=1", "--strategy-option", "population=2", "--strategy-option", "sample_size=1",
           "--torch-threads", "1", "--quiet", "--out", str(out)]
    assert main(cmd) == 0
    capsys.readouterr()
    good = torch.load(out / "supernet.pt", weights_only=True)

    def refused(args: list[str], message: str) -> None:
        before = _files(out)
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert _files(out) == before   # nothing written, nothing overwritten

    refused(["search", "--resume", str(out), "--epochs", "3"], "other settings")
    torch.save({**good, "meta": {**good["meta"], "strategy": "single-path"}}, out / "supernet.pt")
    refused(cmd, "written by another training run (strategy 'single-path' (this run: 'supernet'))")
    torch.save({**good, "meta": {**good["meta"], "space": "nasnet"}}, out / "supernet.pt")
    refused(cmd, "written by another training run (space 'nasnet' (this run: 'mbconv')")
    (out / "supernet.pt").write_bytes(b"not a checkpoint")
    refused(cmd, "supernet.pt is not a readable checkpoint")
    (out / "supernet.pt").unlink()          # no final checkpoint: training starts from its state file
    (out / "supernet.state.pt").write_bytes(b"\x80garbage")
    refused(cmd, "supernet.state.pt is not a readable checkpoint")
    torch.save({"format": FORMAT, "meta": {**good["meta"], "space": "nasnet", "strategy": "darts"}},
               out / "supernet.state.pt")
    refused(cmd, "supernet.state.pt was written by another training run (space 'nasnet' (this run: 'mbconv')")


def test_ray_weight_sharing_search_runs_the_search_as_the_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """`nas.api.search` hands a weight-sharing search with --runner ray to N Ray processes, each running the
    search as a torchrun rank would (runner local inside: the ranks must not start Ray again)."""
    import nas.api
    from nas.pipeline.config import SearchConfig
    seen: dict[str, Any] = {}

    def fake(workers: int, address: str | None, target: str, kwargs: dict[str, Any], cuda: bool = False) -> str:
        seen.update(workers=workers, address=address, target=target, cuda=cuda, **kwargs)
        return "rank 0's result"
    monkeypatch.setattr("nas.cluster.ray_train.run_on_ray", fake)
    cfg = SearchConfig(space="mbconv", targets=("pixel1",), strategy="supernet", runner="ray", workers=2,
                       batch_size=32, dataset="synthetic:64")
    assert nas.api.search(cfg, progress=False, torch_threads=1) == "rank 0's result"
    assert seen["workers"] == 2 and seen["target"] == "nas.api:search" and seen["address"] is None
    inner = seen["cfg"]
    assert (inner.runner, inner.workers, inner.address) == ("local", None, None) and inner.strategy == "supernet"
    assert seen["progress"] is False and seen["torch_threads"] == 1 and seen["cuda"] is False
