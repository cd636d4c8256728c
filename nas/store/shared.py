"""`SharedStudyStore`: an Optuna study that several searches work on together (RDB server or journal).

Each search claims a trial in the database before evaluating it: it creates the trial RUNNING with
the arch key, its owner (host:pid) and a heartbeat time as system attributes, then reads the study
back and checks that its claim stands:

* no other visible trial (running or finished) of the same arch was created before it (lower
  storage trial id) - so no two searches evaluate one arch, and
* fewer than `target` visible trials were created before it - so the study ends with exactly
  `--trials` trials however many searches race for the last ones.

A claim that does not stand is withdrawn: finished FAIL with ``interrupted`` set, which every reader
(`trials()`, `nas report`) skips, as it skips the trials a stopped search left running. While a
search evaluates, a heartbeat thread refreshes its claims; a claim whose owner is a dead process of
this host, or whose heartbeat is older than the grace period, is stale, and the first search to
mark it interrupted (the database lets exactly one state change through) evaluates it again.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from nas.core.arch import Arch
from nas.core.errors import ArchError, UsageError
from nas.store.study import OptunaStore
from nas.store.storage import make_storage

if TYPE_CHECKING:
    from nas.core.space import SearchSpace

log = logging.getLogger(__name__)
KEY, OWNER, BEAT = "nas_key", "nas_owner", "nas_heartbeat"


def is_shared_spec(spec: str) -> bool:
    """Stores several searches may share: journal files and RDB servers (not SQLite, not jsonl)."""
    return spec.startswith("journal:") or ("://" in spec and not spec.startswith("sqlite:"))


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_dead(owner: str) -> bool:
    """`owner` is a process of this host that no longer exists."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass
class StudyState:
    """One read of the study: visible finished trials, live claims, stale claims (by storage id)."""

    finished: list[Any] = field(default_factory=list)   # FrozenTrials, COMPLETE/FAIL, not interrupted
    running: list[Any] = field(default_factory=list)    # RUNNING claims (live or stale)
    stale: list[Any] = field(default_factory=list)      # subset of running: owner dead or heartbeat old

    @property
    def visible(self) -> int:
        return len(self.finished) + len(self.running)


class SharedStudyStore(OptunaStore):
    """`OptunaStore` with claims, heartbeats and stale-claim takeover (see the module doc)."""

    shared = True

    def __init__(self, spec: str, study: str, *, space: "SearchSpace | None" = None,
                 objectives: Sequence[tuple[str, bool]] = (("score", True),), create: bool = True,
                 params: bool = True, grace_s: float = 40.0) -> None:
        super().__init__(make_storage(spec), study, space=space, objectives=objectives, create=create,
                         params=params)
        self.spec, self.grace_s, self.owner = spec, grace_s, owner_id()

    def recover(self, max_retries: int = 2) -> list[tuple[Arch, int]]:
        raise UsageError("a shared study (--storage with a database URL or journal:PATH) is run by the "
                         "cooperating local runner only; use --runner local and a non-weight-sharing strategy, "
                         "or a sqlite:/// store")

    # -- reading ----------------------------------------------------------------------------------
    def state(self) -> StudyState:
        from optuna.trial import TrialState
        frozen = self._retry(lambda: self.storage.get_all_trials(self._study_id, deepcopy=False), "reading trials")
        st = StudyState()
        now = time.time()
        for ft in sorted(frozen, key=lambda t: t._trial_id):
            if ft.user_attrs.get("interrupted") or "arch" not in ft.user_attrs:
                continue
            if ft.state in (TrialState.COMPLETE, TrialState.FAIL):
                st.finished.append(ft)
            elif ft.state == TrialState.RUNNING:
                st.running.append(ft)
                if ft.number not in self._ids and self._is_stale(ft, now):
                    st.stale.append(ft)
        return st

    def _is_stale(self, ft: Any, now: float) -> bool:
        owner = str(ft.system_attrs.get(OWNER, ""))
        beat = ft.system_attrs.get(BEAT)
        if beat is None:   # a trial some other program left running
            beat = ft.datetime_start.timestamp() if ft.datetime_start else 0.0
        return owner_is_dead(owner) or now - float(beat) > self.grace_s

    def to_trial(self, ft: Any) -> Any:
        return self._to_trial(ft)

    # -- claiming ---------------------------------------------------------------------------------
    def claim(self, arch: Arch, target: int, attempt: int = 0, allow_duplicate: bool = False) -> int | None:
        """Create a RUNNING trial for `arch` and keep it if it stands; its number, or None (withdrawn)."""
        tid = self._create(arch, attempt)
        number = self.storage.get_trial_number_from_id(tid)
        st = self.state()
        before = [ft for ft in st.finished + st.running if ft._trial_id < tid]
        reason = None
        if len(before) >= target:
            reason = f"the study already had its {target} trials"
        elif not allow_duplicate and any((ft.system_attrs.get(KEY) or _key(ft)) == arch.key for ft in before):
            reason = "another search had claimed or evaluated this arch first"
        if reason is None:
            self._ids[number] = tid
            return number
        self._withdraw(tid, f"withdrawn: {reason}")
        return None

    def _create(self, arch: Arch, attempt: int) -> int:
        from optuna.trial import FrozenTrial, TrialState
        attrs = self._start_attrs(arch, attempt)
        params, dists = self._params(arch)
        system = {KEY: arch.key, OWNER: self.owner, BEAT: time.time()}
        template = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, values=None,
                               datetime_start=_dt.datetime.now(), datetime_complete=None, params=params,
                               distributions=dists, user_attrs=attrs, system_attrs=system,
                               intermediate_values={}, trial_id=-1)
        return self._retry(lambda: self.storage.create_new_trial(self._study_id, template), "creating a trial")

    def _withdraw(self, tid: int, why: str) -> bool:
        """Hide a RUNNING trial (FAIL + interrupted); False if it had finished meanwhile."""
        from optuna.exceptions import UpdateFinishedTrialError
        try:
            self._finish(tid, {"interrupted": True, "error": why}, None)
        except UpdateFinishedTrialError:
            return False
        return True

    def take_over(self, ft: Any, max_retries: int) -> tuple[Arch, int] | None:
        """Claim a stale trial's retry: mark it interrupted (or failed for good after `max_retries`
        attempts). (arch, attempt) to evaluate again, or None if another search got there first or
        no retry is left."""
        from optuna.exceptions import UpdateFinishedTrialError
        attempt = int(ft.user_attrs.get("attempt", 0))
        try:
            arch = Arch.from_dict(ft.user_attrs["arch"])
        except (KeyError, ArchError):
            arch = None
        owner = ft.system_attrs.get(OWNER, "?")
        try:
            if arch is not None and attempt < max_retries:
                self._finish(ft._trial_id, {"interrupted": True, "error": f"interrupted: its search ({owner}) "
                             "stopped during this evaluation; another search evaluated it again"}, None)
                log.warning("trial %d of %s died with it; evaluating it again (attempt %d)", ft.number, owner,
                            attempt + 1)
                return arch, attempt + 1
            self._finish(ft._trial_id, {"error": f"interrupted {attempt + 1} times: its search stopped during "
                         "this evaluation each time (does it crash the process?)"}, None)
        except UpdateFinishedTrialError:
            pass
        return None

    def claimed(self) -> list[int]:
        """Storage ids of the claims this search holds now."""
        return list(self._ids.values())


def _key(ft: Any) -> str | None:
    try:
        return Arch.from_dict(ft.user_attrs["arch"]).key
    except (KeyError, ArchError):
        return None


class Heartbeat:
    """Refresh this search's claims every `interval_s` from a thread (with its own connection)."""

    def __init__(self, store: SharedStudyStore, interval_s: float) -> None:
        import threading
        self.store, self.interval_s = store, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nas-heartbeat", daemon=True)

    def _run(self) -> None:
        storage = make_storage(self.store.spec)
        while not self._stop.wait(self.interval_s):
            for tid in self.store.claimed():
                try:
                    storage.set_trial_system_attr(tid, BEAT, time.time())
                except Exception as exc:   # finished meanwhile, or a transient connection error
                    log.debug("heartbeat of trial id %d: %s", tid, exc)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
