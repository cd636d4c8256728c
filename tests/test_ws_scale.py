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
    with pytest.raises(UsageError, match="written by 2 data-parallel processes"):
        _supernet(StepCheckpoint(path, {"run": "supernet", "world_size": 2}, every=2), None)
    assert path.read_bytes() == before
