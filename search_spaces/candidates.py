"""A candidate list: search only a given set of archs of a space (e.g. the archs a benchmark has
ground truth for).

`CandidateSet` holds the block strings; `sample` draws uniformly from them and `mutate` moves to a
candidate that differs in the fewest genes (ties broken by the generator), so every strategy that
samples and mutates stays inside the list. A space opts in through a `candidates` option; the
option restricts the search, not the nets, so latency tables ignore it (`nas.core.space.NET_NEUTRAL_OPTIONS`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from nas.core.arch import Arch
from nas.core.errors import ArchError, UsageError

if TYPE_CHECKING:
    from nas.core.space import SearchSpace



@dataclass(frozen=True)
class CandidateSet:
    archs: tuple[Arch, ...]
    source: str
    _index: dict[Arch, int] = field(default_factory=dict, compare=False, repr=False)
    _matrix: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    _vocab: dict[str, int] = field(default_factory=dict, compare=False, repr=False)   # gene text -> id

    def __post_init__(self) -> None:
        if not self.archs:
            raise UsageError(f"candidate list {self.source} is empty")
        self._index.update({a: i for i, a in enumerate(self.archs)})

    def __contains__(self, arch: object) -> bool:
        return arch in self._index

    def __len__(self) -> int:
        return len(self.archs)

    def sample(self, rng: np.random.Generator) -> Arch:
        return self.archs[int(rng.integers(len(self.archs)))]

    def _genes(self) -> np.ndarray:
        """The candidates' genes as integer ids per decision (one vectorised comparison per distance)."""
        if "genes" not in self._matrix:
            text = [[str(g) for g in c.genes] for c in self.archs]
            vocab = self._vocab
            self._matrix["genes"] = np.array([[vocab.setdefault(g, len(vocab)) for g in row] for row in text])
        return self._matrix["genes"]

    def _row(self, genes: tuple[object, ...] | list[object]) -> np.ndarray:
        self._genes()
        return np.array([self._vocab.get(str(g), -1) for g in genes])

    def by_distance(self, genes: tuple[object, ...] | list[object], rng: np.random.Generator) -> np.ndarray:
        """Indices of every candidate, nearest to `genes` first (gene Hamming distance), ties in a
        random order drawn from `rng`: the projection of a proposal onto the list."""
        dist = (self._genes() != self._row(genes)).sum(axis=1)
        return np.lexsort((rng.random(len(dist)), dist))

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """A candidate other than `arch` at the smallest gene (Hamming) distance from it."""
        if len(self.archs) < 2:
            raise ArchError(f"candidate list {self.source} holds one arch; there is nothing to mutate to")
        dist = (self._genes() != self._row(arch.genes)).sum(axis=1)
        dist[dist == 0] = len(arch.genes) + 1
        nearest = np.flatnonzero(dist == dist.min())
        return self.archs[int(nearest[rng.integers(len(nearest))])]


#: the most archs a candidate file may list (a 1,000,000-line file gave no answer in 300 s)
MAX_CANDIDATES = 100_000
#: the longest line read (an arch JSON of the largest space is a few kB)
MAX_LINE = 1 << 16


def _lines(path: Path) -> "list[str]":
    """The lines of a candidate file, read one at a time and bounded: a folder, a binary file, an
    endless pipe or a file of more than MAX_CANDIDATES archs is one UsageError naming it."""
    if path.is_dir():
        raise UsageError(f"candidate file {path} is a folder; give a text file of one arch per line")
    lines: list[str] = []
    archs = 0
    try:
        with open(path, encoding="utf-8-sig") as fh:
            while True:
                line = fh.readline(MAX_LINE + 1)
                if not line:
                    return lines
                if len(line) > MAX_LINE:
                    raise UsageError(f"candidate file {path}, line {len(lines) + 1}: longer than {MAX_LINE} "
                                     f"characters; one arch per line")
                lines.append(line)
                archs += bool(line.split("#", 1)[0].strip())
                if archs > MAX_CANDIDATES:
                    raise UsageError(f"candidate file {path} lists more than {MAX_CANDIDATES} archs; "
                                     f"give at most {MAX_CANDIDATES}")
    except UnicodeDecodeError:
        raise UsageError(f"candidate file {path} is not text (UTF-8); give one arch per line") from None
    except OSError as exc:
        raise UsageError(f"cannot read candidate file {path}: {exc.strerror or exc}") from None


def read_candidates(space: "SearchSpace", path: str | Path) -> CandidateSet:
    """A candidate file: one block string (or arch JSON) per line; '#' comments and blank lines skipped."""
    path = Path(path)
    lines = _lines(path)
    archs: list[Arch] = []
    seen: set[Arch] = set()
    for n, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip() if not line.lstrip().startswith("{") else line.strip()
        if not text:
            continue
        try:
            arch = space.parse_any(text)
        except ArchError as exc:
            raise UsageError(f"candidate file {path}, line {n}: {exc}") from None
        if arch in seen:
            raise UsageError(f"candidate file {path}, line {n}: arch {text!r} is listed twice")
        seen.add(arch)
        archs.append(arch)
    return CandidateSet(tuple(archs), str(path))
