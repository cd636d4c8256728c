"""`SearchSpace`: the interface every space implements, with defaults for the generic parts.

A space declares its `decisions` (name + ordered choices); an Arch holds one gene per decision.
Subclasses implement `format`/`parse` (the human block string), `build` (a torch module) and
`layers` (the LayerSpecs latency tables are keyed by). Sampling, mutation, encoding and JSON
handling have defaults that work on the decisions alone.
"""
from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from nas.core.arch import Arch, Gene
from nas.core.errors import ArchError, choices_text
from nas.core.layer import LayerSpec

if TYPE_CHECKING:
    import torch.nn as nn


#: space options that select which archs are searched without changing any net (a candidate list):
#: latency tables ignore them when checking that a table fits a space
NET_NEUTRAL_OPTIONS: tuple[str, ...] = ("candidates",)

def _looks_like_name(text: str) -> bool:
    """A single word with a dash or underscore (`single-path-nas`, `darts_v2`): meant as a preset."""
    return len(text) <= 60 and " " not in text and "|" not in text and any(c in text for c in "-_")


@dataclass(frozen=True)
class Decision:
    """One thing that can vary: `name` and its ordered `choices`."""

    name: str
    choices: tuple[Gene, ...]


class SearchSpace(ABC):
    """Base class. Subclasses set `name`, implement the abstract methods and register themselves."""

    name: ClassVar[str]
    presets: ClassVar[dict[str, str]] = {}   # named reference nets as block strings
    #: the op of join layers that price a ReLU's int8 requantization where a node tensor is read by ReLU
    #: layers and other ops alike; set, int8 layers are timed with their input ReLU folded into the
    #: tensor (latency.int8_context). None: layers keep their input ReLU.
    relu_join_op: ClassVar[str | None] = None

    # -- what can vary -------------------------------------------------------------------------
    @property
    @abstractmethod
    def decisions(self) -> Sequence[Decision]:
        ...

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Input shape without batch, e.g. (3, 224, 224)."""

    def options(self) -> dict[str, Any]:
        """The constructor options that, with `name`, rebuild this space (stored with every result)."""
        return {}

    # -- validity ------------------------------------------------------------------------------
    def validate(self, arch: Arch) -> Arch:
        """Raise ArchError unless `arch` is a valid, canonical arch of this space; return it."""
        if arch.space != self.name:
            raise ArchError(f"arch belongs to space {arch.space!r}, not {self.name!r}")
        decisions = self.decisions
        if len(arch.genes) != len(decisions):
            raise ArchError(f"{self.name} arch needs {len(decisions)} genes, got {len(arch.genes)}")
        for gene, d in zip(arch.genes, decisions):
            if gene not in d.choices:
                raise ArchError(f"{d.name}: {gene!r} is not a valid choice; valid: {choices_text(d.choices)}")
        self.check_constraints(arch)
        return arch

    def check_constraints(self, arch: Arch) -> None:
        """Cross-decision rules beyond per-decision choices; raise ArchError. Default: none."""

    def make(self, genes: Sequence[Gene]) -> Arch:
        return self.validate(Arch(self.name, tuple(genes)))

    # -- stochastic operators (explicit generators, never global state) ------------------------
    def sample(self, rng: np.random.Generator) -> Arch:
        for _ in range(1000):
            genes = [d.choices[rng.integers(len(d.choices))] for d in self.decisions]
            arch = Arch(self.name, tuple(genes))
            try:
                return self.validate(arch)
            except ArchError:
                continue
        raise ArchError(f"could not sample a valid {self.name} arch in 1000 tries")

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Change one decision to another valid choice (retrying until the result is valid)."""
        return self._mutate_one_gene(arch, rng, lambda genes: self.validate(Arch(self.name, tuple(genes))))

    def _mutate_one_gene(self, arch: Arch, rng: np.random.Generator, finish: Any) -> Arch:
        """Change one random gene to another choice and `finish(genes)` into an arch; retry while
        that raises ArchError or gives `arch` back."""
        decisions = self.decisions
        for _ in range(1000):
            i = int(rng.integers(len(decisions)))
            options = [c for c in decisions[i].choices if c != arch.genes[i]]
            if not options:
                continue
            genes = list(arch.genes)
            genes[i] = options[rng.integers(len(options))]
            try:
                child = finish(genes)
            except ArchError:
                continue
            if child != arch:
                return child
        raise ArchError(f"could not mutate {self.format(arch)!r} into a different valid arch")

    # -- encodings -----------------------------------------------------------------------------
    def encode(self, arch: Arch) -> np.ndarray:
        """Choice index per decision (int64), the feature vector for predictors and LUT gathers."""
        return np.array([d.choices.index(g) for g, d in zip(arch.genes, self.decisions)], dtype=np.int64)

    def decode(self, codes: Sequence[int]) -> Arch:
        return self.make([d.choices[int(c)] for c, d in zip(codes, self.decisions)])

    def size(self) -> float:
        """Number of genotypes (upper bound when constraints exclude some)."""
        return float(math.prod(float(len(d.choices)) for d in self.decisions))   # no numpy: `nas list` calls it

    def arch_from_json(self, text: str) -> Arch:
        return self.validate(Arch.from_json(text))

    def parse_any(self, text: str) -> Arch:
        """Accept either a block string or arch JSON (what the CLI's --arch takes)."""
        stripped = text.strip()
        if stripped.startswith("{"):
            return self.arch_from_json(stripped)
        if stripped in self.presets:
            return self.parse(self.presets[stripped])
        try:
            return self.parse(stripped)
        except ArchError as exc:
            if _looks_like_name(stripped):   # a misspelt preset or one of another space
                names = ", ".join(sorted(self.presets)) or "(none)"
                raise ArchError(f"{stripped[:60]!r} is no preset of {self.name} and no block string ({exc}); "
                                f"{self.name} presets: {names}") from None
            raise

    # -- human format --------------------------------------------------------------------------
    @abstractmethod
    def format(self, arch: Arch) -> str:
        """The block string; `parse(format(a)) == a` exactly."""

    @abstractmethod
    def parse(self, text: str) -> Arch:
        """Inverse of `format`; raises ArchError naming the bad token and the valid ones."""

    # -- networks ------------------------------------------------------------------------------
    @abstractmethod
    def build(self, arch: Arch, num_classes: int | None = None) -> "nn.Module":
        """A torch module for `arch` taking (B, *input_shape) inputs."""

    @abstractmethod
    def layers(self, arch: Arch) -> list[LayerSpec]:
        """Every layer of the net as LayerSpecs (the latency model sums their table entries)."""

    @abstractmethod
    def all_layers(self) -> list[LayerSpec]:
        """Every distinct LayerSpec any arch of this space can contain (what profiling measures)."""

    def macs(self, arch: Arch) -> int:
        """Multiply-accumulates of the net at batch 1, from its layer specs (no torch module built)."""
        from nas.core.ops import layer_macs
        return int(sum(layer_macs(s) for s in self.layers(arch)))

    def live_layers(self, arch: Arch) -> list[LayerSpec]:
        """The layers of the effective graph: without ops whose output never reaches the net's output
        (a compiler that prunes dead code runs only these). Default: every layer."""
        return self.layers(arch)

    def graph_layers(self, arch: Arch) -> list[LayerSpec]:
        """The layers the exported graph runs, for tables that price it (int8: latency.model.layer_list):
        `layers` less those the exporter merges into an identical earlier one (an op without weights
        applied twice to one tensor). Default: `layers`."""
        return self.layers(arch)

    def join_layers(self, arch: Arch) -> list[LayerSpec]:
        """Ops that only combine branches (element-wise sums, zero edges) and belong to no layer: a
        float runtime fuses them away, an int8 graph runs each as a requantizing kernel. Int8 latency
        tables price them (their metadata `joins`); float ones do not. Default: none."""
        return []

    def all_join_layers(self) -> list[LayerSpec]:
        """Every distinct join layer any arch can contain (what an int8 profile also times)."""
        return []

    def separable_join_layers(self) -> tuple[list[LayerSpec], list[list[list[LayerSpec]]]] | None:
        """`join_layers` split like `separable_layers` (None: not separable, or no joins)."""
        return None

    def separable_layers(self) -> tuple[list[LayerSpec], list[list[list[LayerSpec]]]] | None:
        """If each decision's layers depend on that decision alone: (fixed layers, per decision
        per choice layers). Lets the LUT model predict by a vectorised gather. None otherwise."""
        return None

    def describe(self) -> str:
        return f"{self.name}({json.dumps(self.options(), sort_keys=True)})"
