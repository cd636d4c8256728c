"""Mid-training checkpoints of the weight-sharing trainers (supernet, single-path, darts, differentiable).

A trainer's loop state is made of its modules and optimizers (state dicts), the numpy generator that
draws its batches and paths, torch's global generator, the position in the current epoch's batch
order (`BatchCursor`) and a few running sums. `StepCheckpoint` writes all of it atomically to one
file every `every` steps and after every epoch; a trainer started again with the same file restores
it and continues at the step it reached, so the resumed run repeats the uninterrupted one (the same
batches, paths and updates; float results equal up to the nondeterminism of the kernels).

The file carries the run's `meta` (space, training settings, strategy). A file written with other
settings, or one that cannot be read, is refused with a `UsageError` naming it (nothing overwritten).
Under torchrun or Ray (data parallel, `dist` active) every rank calls `save` at the same step; the
parts that differ between ranks (the running sums of the epoch, torch's generator, BatchNorm's running
statistics: each rank normalises its own slice) are gathered to rank 0, which alone writes the file, with
one entry per rank. On resume rank 0 reads and checks the file and broadcasts it; each rank restores the
shared state (weights, optimizers, the batch and path generator: the same on every rank) and its own
part. The world size is part of the meta: a state written by N processes continues with N processes.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from nas.core.errors import UsageError

log = logging.getLogger(__name__)

FORMAT = "nas-training-state/1"


class BatchCursor:
    """One pass over `n` samples in batches of `batch_size`, in an order drawn from `rng` at the first
    `next()` (as `nas.supernet.trainer.batch_indices` draws it; batches of 1 are dropped, BatchNorm
    cannot train on them), with a position a checkpoint stores (`state` / `load`)."""

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator) -> None:
        self.n, self.batch_size, self.rng = int(n), int(batch_size), rng
        self.order: np.ndarray | None = None
        self.pos = 0   # batches handed out

    def _batches(self) -> list[np.ndarray]:
        assert self.order is not None
        out = [self.order[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        return [b for b in out if len(b) > 1]

    def next(self) -> np.ndarray | None:
        if self.order is None:
            self.order = self.rng.permutation(self.n)
        batches = self._batches()
        if self.pos >= len(batches):
            return None
        self.pos += 1
        return batches[self.pos - 1]

    def __iter__(self) -> Iterator[np.ndarray]:
        while (idx := self.next()) is not None:
            yield idx

    def state(self) -> dict[str, Any]:
        return {"order": None if self.order is None else torch.from_numpy(self.order.astype(np.int64)),
                "pos": self.pos, "n": self.n, "batch_size": self.batch_size}

    def load(self, state: Mapping[str, Any]) -> "BatchCursor":
        if int(state["n"]) != self.n or int(state["batch_size"]) != self.batch_size:
            raise UsageError(f"training state holds a batch order of {state['n']} samples in batches of "
                             f"{state['batch_size']}, this run has {self.n} in batches of {self.batch_size}")
        self.order = None if state["order"] is None else state["order"].numpy()
        self.pos = int(state["pos"])
        return self


@dataclass
class Restored:
    """What a trainer continues from: `epoch` epochs done (plus `loop`, the state inside epoch `epoch`,
    when the file was written mid-epoch), the history so far and the values carried across epochs."""

    epoch: int
    step: int
    history: list[dict[str, Any]]
    loop: dict[str, Any] | None
    carry: dict[str, Any] = field(default_factory=dict)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


FIRST = ("space", "strategy", "space_options", "dataset", "train_options", "config")   # named first


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    keys = sorted(set(old) | set(new), key=lambda k: (FIRST.index(k) if k in FIRST else len(FIRST), k))
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {_short(a)} (this run: {_short(b)})")
    return out


def meta_mismatch(path: Path, old: Mapping[str, Any], new: Mapping[str, Any]) -> UsageError | None:
    """A UsageError naming what differs between a checkpoint's meta and this run's, or None."""
    diff = _differences(_jsonable(old), _jsonable(new))
    if not diff:
        return None
    shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
    return UsageError(f"{path} was written by another training run ({shown}); resume with the same settings, "
                      f"or start over with --no-resume or another --out")


def read_state(path: Path) -> dict[str, Any]:
    """The dict saved at `path`; a file torch cannot read is a UsageError naming it."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # truncated, not a torch file, unpickling refused, ...
        raise UsageError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {str(exc)[:80]}); "
                         f"move it away to start over") from None
    if not isinstance(blob, dict) or "meta" not in blob:
        raise UsageError(f"{path} is not a nas checkpoint (no meta); move it away to start over")
    return blob


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    from nas.core.files import hidden_temp
    tmp = hidden_temp(path, ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class StepCheckpoint:
    """Training state at `path` (None: nothing written), written every `every` steps (0: after each
    epoch only) and after each epoch. `objects`: name -> anything with state_dict/load_state_dict
    (modules, optimizers, LR schedulers), set by the trainer with `attach`."""

    def __init__(self, path: Path | None, meta: Mapping[str, Any], every: int = 20, dist: Any = None) -> None:
        if int(every) < 0:
            raise UsageError(f"checkpoint_every must be >= 0 steps (0: after each epoch only), got {every}")
        self.dist = dist if dist is not None and getattr(dist, "active", False) else None
        self.active = path is not None
        self.path, self.meta, self.every = path, dict(meta), int(every)
        self.objects: dict[str, Any] = {}
        self.rng: np.random.Generator | None = None
        self.total_steps = 0
        self.resumed: dict[str, Any] | None = None
        self.last_saved: tuple[int, int] | None = None   # (global step, epochs done) of the last write

    def check(self) -> dict[str, Any] | None:
        """The saved state if `path` holds one written with this run's meta (else None when there is
        no file); a file of another run or an unreadable one raises UsageError."""
        if not self.active or self.path is None or not self.path.is_file():
            return None
        blob = read_state(self.path)
        if blob.get("format") != FORMAT:
            raise UsageError(f"{self.path} is not a nas training state (format {blob.get('format')!r}); "
                             f"move it away to start over")
        written, world = len(blob.get("ranks") or ()) or 1, self.dist.world_size if self.dist is not None else 1
        if written != world:   # each rank's running sums and BN statistics are in it: the same count goes on
            how = (f"torchrun --nproc_per_node={written} or --runner ray --workers {written}" if written > 1
                   else "one process: no torchrun, no --runner ray")
            raise UsageError(f"{self.path} was written by {written} data-parallel process{'es' * (written > 1)} "
                             f"and this run has {world}; continue it with {how}, or start over with --no-resume "
                             f"or another --out")
        bad = meta_mismatch(self.path, blob["meta"], self.meta)
        if bad is not None:
            raise bad
        return blob

    def _checked(self) -> dict[str, Any] | None:
        """`check()` on one process; under dist rank 0 checks and every rank gets its blob (or its
        refusal: rank 0 raises the UsageError, the others stop with a line pointing at it)."""
        if self.dist is None:
            return self.check()
        import nas.training.distributed as D
        blob, error = None, None
        if self.dist.is_main:
            try:
                blob = self.check()
            except UsageError as exc:
                error = exc
        if not D.agree(self.dist, error is None):
            if error is not None:
                raise error
            raise UsageError(f"rank {self.dist.rank}: rank 0 refused the training state {self.path} (its message "
                             f"says why)")
        return D.from_main(self.dist, blob)  # type: ignore[no-any-return]

    def attach(self, rng: np.random.Generator, total_steps: int, **objects: Any) -> Restored | None:
        """Register what is saved; restore it from `path` when a state is there. Returns where to go on."""
        self.rng, self.total_steps, self.objects = rng, int(total_steps), objects
        blob = self._checked()
        if blob is None:
            return None
        missing = sorted(set(objects) - set(blob["objects"]))
        if missing:
            raise UsageError(f"{self.path} holds no state for {', '.join(missing)}; move it away to start over")
        try:
            for name, obj in objects.items():
                obj.load_state_dict(blob["objects"][name])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UsageError(f"{self.path} does not fit this run's model ({str(exc)[:100]}); "
                             f"move it away to start over") from None
        rng.bit_generator.state = json.loads(blob["rng"])
        if self.dist is not None:   # this rank's own part: running sums, torch's generator, BN statistics
            mine = blob["ranks"][self.dist.rank]
            blob = {**blob, "loop": mine["loop"], "carry": mine["carry"], "torch_rng": mine["torch_rng"]}
            for name, buffers in mine["buffers"].items():
                objects[name].load_state_dict(buffers, strict=False)
        torch.set_rng_state(blob["torch_rng"])
        r = Restored(int(blob["epoch"]), int(blob["step"]), list(blob["history"]), blob["loop"],
                     dict(blob.get("carry") or {}))
        self.resumed = {"step": r.step, "steps": self.total_steps, "epoch": r.epoch + (r.loop is not None),
                        "checkpoint": str(self.path)}
        self.last_saved = (r.step, r.epoch)
        log.info("resuming training at step %d of %d from %s", r.step, self.total_steps, self.path)
        return r

    def save(self, epoch: int, step: int, history: list[dict[str, Any]], loop: dict[str, Any] | None = None,
             carry: Mapping[str, Any] | None = None) -> None:
        """Write the state: `epoch` epochs complete (and `loop`, the state inside the next one, if any)."""
        if not self.active or self.path is None or self.rng is None:
            return
        ranks = None
        if self.dist is not None:   # a collective: every rank is here at the same step
            import torch.distributed as torch_dist
            part = {"loop": loop, "carry": dict(carry or {}), "torch_rng": torch.get_rng_state(),
                    "buffers": {name: _buffers(obj) for name, obj in self.objects.items()
                                if isinstance(obj, torch.nn.Module)}}
            ranks = [None] * self.dist.world_size
            torch_dist.all_gather_object(ranks, part)
            if not self.dist.is_main:
                self.last_saved = (int(step), int(epoch))
                return
        blob = {"format": FORMAT, "meta": _jsonable(self.meta), "epoch": int(epoch), "step": int(step),
                "total_steps": self.total_steps, "history": _jsonable(history), "loop": loop,
                "carry": dict(carry or {}), "rng": json.dumps(self.rng.bit_generator.state),
                "torch_rng": torch.get_rng_state(),
                "objects": {name: obj.state_dict() for name, obj in self.objects.items()}}
        if ranks is not None:
            blob["ranks"] = ranks
        save_atomic(blob, self.path)
        self.last_saved = (int(step), int(epoch))

    def after_step(self, epoch: int, step: int, history: list[dict[str, Any]], loop: Callable[[], dict[str, Any]],
                   carry: Mapping[str, Any] | None = None) -> None:
        """Every `every` global steps: save the state inside epoch `epoch` (`loop()` builds it)."""
        if self.active and self.every and step % self.every == 0:
            self.save(epoch, step, history, loop(), carry)

    def note(self) -> str:
        """What an interruption leaves: the truthful sentence for the user."""
        if not self.active or self.path is None:
            return "training was not checkpointed (no --out); a new run starts it again"
        if self.last_saved is None:
            return (f"no training step was checkpointed yet (every {self.every} steps and each epoch, in "
                    f"{self.path}); the same command starts training again")
        step, _ = self.last_saved
        return (f"training is saved at step {step} of {self.total_steps} in {self.path} - run the same command "
                f"again to continue from there")

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Around a training loop: an interruption (Ctrl-C, SIGTERM) leaving it carries `note()` as
        its `nas_note` attribute, which the CLI prints."""
        try:
            yield
        except BaseException as exc:
            interrupted(exc, self)
            raise

    def finish(self) -> None:
        """Training is complete (its result saved elsewhere): remove the state file."""
        if self.active and self.path is not None and self.path.exists():
            self.path.unlink()


def _buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The buffers of `module`'s state dict (BatchNorm running statistics), detached copies."""
    names = {name for name, _ in module.named_buffers()}
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items() if k in names}


def seen_state(seen: list[np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.asarray(s, dtype=np.int64)) for s in seen]


def seen_load(saved: list[torch.Tensor]) -> list[np.ndarray]:
    return [t.numpy() for t in saved]


def interrupted(exc: BaseException, ck: StepCheckpoint) -> None:
    """Attach the checkpoint's note to an interruption (KeyboardInterrupt, SIGTERM) for the CLI."""
    try:
        exc.nas_note = ck.note()   # type: ignore[attr-defined]
    except AttributeError:
        pass
