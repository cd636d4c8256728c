"""A candidate list on any space: `restricted(cls, options, candidates)` (`nas search --candidates FILE`).

nb201 takes a `candidates` option of its own (also the named list 'naslib'); every other space gets
it from here: `get_space(name, candidates=FILE, ...)` builds the space with its other options and
restricts it to the archs of FILE (one block string or arch JSON per line, `search_spaces.candidates`).
The restricted space is an instance of a subclass of the space's class (same `name`, nets, layers and
tables), whose `sample`, `mutate`, `size` and validation stay inside the list: an arch outside it
raises ArchError naming the list. `options()` includes `candidates`, so a stored search rebuilds the
same restricted space, and the object pickles (Ray workers) by rebuilding it from its options.

Named lists (`NAMED_LISTS`): `nasnet -o variant=darts -o candidates=nb301` restricts the DARTS space to
the 725 cells of NAS-Bench-301 that NASLib's subset has ground truth for (`bench_data.nb301_records`).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from functools import cache
from typing import Any, Iterator

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from nas.core.arch import Arch
from nas.core.errors import ArchError, UsageError
from nas.core.space import SearchSpace
from search_spaces.candidates import CandidateSet, read_candidates

_unrestricted = threading.local()   # set while the space describes nets (not the search): no list check


@contextmanager
def _describing() -> Iterator[None]:
    before = getattr(_unrestricted, "on", False)
    _unrestricted.on = True
    try:
        yield
    finally:
        _unrestricted.on = before


def _nb301_list(space: SearchSpace) -> CandidateSet:
    from search_spaces.bench_data import NB301_ZC, nb301_records
    opts = space.options()
    if opts.get("variant") != "darts" or opts.get("blocks") != 4:
        raise UsageError(f"candidates=nb301 holds DARTS cells: use it with -o variant=darts (4 blocks), got "
                         f"variant={opts.get('variant')!r}, blocks={opts.get('blocks')!r}")
    with _describing():
        archs = tuple(space.parse(b) for b in nb301_records())
    return CandidateSet(archs, f"nb301 ({NB301_ZC.name})")


#: space name -> named candidate list -> loader (the list is built from the space's own parse)
NAMED_LISTS: dict[str, dict[str, Any]] = {"nasnet": {"nb301": _nb301_list}}


class _CandidateMixin:
    """Overrides of a space class that keep its search inside `self._candidates`."""

    candidates: str
    _candidates: CandidateSet | None

    def _restrict(self, spec: str) -> None:
        self.candidates, self._candidates = str(spec), None   # parse the file with the unrestricted rules
        named = NAMED_LISTS.get(getattr(self, "name", ""), {})
        if spec in named:
            self._candidates = named[spec](self)
            return
        self._candidates = read_candidates(self, spec)  # type: ignore[arg-type]

    def options(self) -> dict[str, Any]:
        return {**super().options(), "candidates": self.candidates}  # type: ignore[misc]

    def check_constraints(self, arch: Arch) -> None:
        super().check_constraints(arch)  # type: ignore[misc]
        if self._candidates is None or arch in self._candidates or getattr(_unrestricted, "on", False):
            return
        space: SearchSpace = self  # type: ignore[assignment]
        with _describing():   # format() validates again: name the arch without this check
            try:
                text = space.format(arch)
            except ArchError:
                text = str(list(arch.genes))
        raise ArchError(f"{space.name} arch {text!r:.200} is not in the candidate list {self._candidates.source} "
                        f"({len(self._candidates)} archs)")

    # the nets of the space are unchanged: what describes them may walk archs outside the list
    def all_layers(self) -> list[Any]:
        with _describing():
            return super().all_layers()  # type: ignore[misc, no-any-return]

    def separable_layers(self) -> Any:
        with _describing():
            return super().separable_layers()  # type: ignore[misc]

    def all_join_layers(self) -> list[Any]:
        with _describing():
            return super().all_join_layers()  # type: ignore[misc, no-any-return]

    def separable_join_layers(self) -> Any:
        with _describing():
            return super().separable_join_layers()  # type: ignore[misc]

    def sample(self, rng: np.random.Generator) -> Arch:
        assert self._candidates is not None
        return self._candidates.sample(rng)

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        assert self._candidates is not None
        return self._candidates.mutate(self.validate(arch), rng)  # type: ignore[attr-defined]

    def size(self) -> float:
        assert self._candidates is not None
        return float(len(self._candidates))

    def __reduce__(self) -> tuple[Any, ...]:
        base = type(self).__mro__[2]
        opts = {k: v for k, v in self.options().items() if k != "candidates"}
        return (restricted, (base, opts, self.candidates))


@cache
def _restricted_class(cls: type[SearchSpace]) -> type[SearchSpace]:
    return type(cls.__name__ + "WithCandidates", (_CandidateMixin, cls), {"__module__": __name__})


def restricted(cls: type[SearchSpace], options: dict[str, Any], candidates: str) -> SearchSpace:
    """An instance of `cls(**options)` whose search stays inside the candidate file `candidates`."""
    if not isinstance(candidates, str) or not candidates:
        raise UsageError(f"candidates must be a candidate file (one {cls.name} block string per line), "
                         f"got {candidates!r:.80}")
    space = _restricted_class(cls)(**options)
    space._restrict(candidates)  # type: ignore[attr-defined]
    return space
