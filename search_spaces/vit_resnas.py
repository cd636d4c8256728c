"""ViT-ResNAS space (Liao, Karaman, Sze 2021, "Searching for Efficient Multi-Stage Vision Transformers").

A multi-stage ViT: convolutional patch embedding (+ class token, positions) -> stages of pre-norm
transformer blocks -> between stages a residual spatial reduction (tokens back to 2-D, conv3x3/2 to
a wider width, shortcut = 2x2 average pool + zero-padded channels) -> LN of the class token ->
linear classifier. The paper classifies from the class token, so does this space.

Decisions follow the paper's weight-sharing super-net for ViT-ResNAS-Tiny (official code,
``supernet_config/sr_tiny_mh.py`` + ``scripts/vit-sr-nas/super_net/tiny.sh``): per stage the
embedding width (5 choices) and depth (3 always-present blocks + 3 that may be dropped -> 3..6), per
block the number of heads (fixed head dim per stage: 32, 48, 64) and the MLP hidden size. The paper
searches MLP hidden sizes as absolute numbers, independent of the width, so the block token carries
the hidden size, not a ratio. Patch 14 at 224 gives a 16x16 grid, then 8x8 and 4x4.

Genes, per stage: depth, width, then (heads, mlp) for each of the stage's `max(depths)` block slots.
Slots beyond the depth are inactive and canonicalised to 0 (`check_constraints` enforces it, `sample`
and `mutate` produce it), so equal nets are equal Archs.

Block string: stages separated by " || ", each ``s<i>: d<depth> w<width> | h<heads>m<mlp> ...``, e.g.
``s1: d3 w176 | h3m704 h4m576 h3m640 || s2: d3 w352 | ... || s3: d3 w704 | ...``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Sequence

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from nas.core.arch import Arch
from nas.core.errors import ArchError
from nas.core.layer import LayerSpec
from nas.core.space import Decision, SearchSpace
from search_spaces.ops import MAX_CLASSES, MAX_RESOLUTION, build_layer
from search_spaces.vit_ops import block_spec, embed_spec, head_spec, reduce_spec

if TYPE_CHECKING:
    import torch.nn as nn

# The ViT-ResNAS-Tiny super-net's choice sets (official code, supernet_config/sr_tiny_mh.py).
PAPER_WIDTHS = ((160, 176, 192, 224, 256), (320, 352, 384, 448, 512), (640, 704, 768, 896, 1024))
PAPER_HEAD_DIMS = (32, 48, 64)
PAPER_HEADS = ((3, 4, 5, 6), (6, 8, 10, 12), (6, 8, 10, 12))      # attention widths 96..192, 288..576, 384..768
PAPER_MLP = (tuple(range(384, 769, 64)), tuple(range(768, 1537, 128)), tuple(range(1536, 3073, 256)))
PAPER_DEPTHS = ((3, 4, 5, 6),) * 3
STEMS = ("conv", "linear")
OFF = 0  # gene value of an inactive block slot

#: DeiT-Ti (Touvron et al. 2021) as a one-stage instance of this space: options + block string.
DEIT_TINY_OPTIONS: dict[str, object] = {
    "patch": 16, "stem": "linear", "widths": [[192]], "heads": [[3]], "head_dims": [64], "mlp": [[768]],
    "depths": [[12]]}
DEIT_TINY = "s1: d12 w192 | " + " ".join(["h3m768"] * 12)

_BLOCK = re.compile(r"h([1-9][0-9]{0,8})m([1-9][0-9]{0,8})")   # bounded: int() refuses > 4300 digits


@dataclass(frozen=True)
class Stage:
    """One stage of an arch: depth, width and its active blocks as (heads, mlp hidden size)."""

    depth: int
    width: int
    blocks: tuple[tuple[int, int], ...]


def _choice_sets(name: str, value: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], ...]:
    out = []
    for i, choices in enumerate(value):
        vals = sorted({int(c) for c in choices})
        if not vals or vals[0] < 1:
            raise ValueError(f"{name}[{i}] = {list(choices)} must be a non-empty list of positive integers")
        out.append(tuple(vals))
    if not out:
        raise ValueError(f"{name} must name at least one stage")
    return tuple(out)


class VitResNASSpace(SearchSpace):
    name = "vit_resnas"
    presets = {
        # ViT-ResNAS-Tiny, the net found by the paper's search (official code,
        # scripts/vit-sr-nas/searched_net/tiny.sh, network_def with dropped blocks removed).
        "vit-resnas-tiny": "s1: d5 w176 | h3m704 h3m576 h3m640 h4m576 h4m704 || "
                           "s2: d6 w352 | h10m1408 h8m1408 h8m1280 h8m1408 h10m1280 h10m1024 || "
                           "s3: d5 w704 | h10m2560 h10m1792 h10m2816 h8m2816 h8m2560",
        # The largest and smallest sub-nets of the Tiny super-net.
        "supernet-max": "s1: d6 w256 | " + " ".join(["h6m768"] * 6) + " || s2: d6 w512 | "
                        + " ".join(["h12m1536"] * 6) + " || s3: d6 w1024 | " + " ".join(["h12m3072"] * 6),
        "supernet-min": "s1: d3 w160 | h3m384 h3m384 h3m384 || s2: d3 w320 | h6m768 h6m768 h6m768 || "
                        "s3: d3 w640 | h6m1536 h6m1536 h6m1536",
    }

    def __init__(self, resolution: int = 224, patch: int = 14, num_classes: int = 1000, stem: str = "conv",
                 widths: Sequence[Sequence[int]] = PAPER_WIDTHS, heads: Sequence[Sequence[int]] = PAPER_HEADS,
                 head_dims: Sequence[int] = PAPER_HEAD_DIMS, mlp: Sequence[Sequence[int]] = PAPER_MLP,
                 depths: Sequence[Sequence[int]] = PAPER_DEPTHS) -> None:
        self.resolution, self.patch, self.num_classes = int(resolution), int(patch), int(num_classes)
        if not 1 <= self.num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes {num_classes} outside [1, {MAX_CLASSES}]")
        if not 1 <= self.resolution <= MAX_RESOLUTION:
            raise ValueError(f"resolution {resolution} outside [1, {MAX_RESOLUTION}]")
        if stem not in STEMS:
            raise ValueError(f"stem {stem!r} unknown; valid: {', '.join(STEMS)}")
        self.stem = stem
        self.widths = _choice_sets("widths", widths)
        self.heads = _choice_sets("heads", heads)
        self.mlp = _choice_sets("mlp", mlp)
        self.depths = _choice_sets("depths", depths)
        self.head_dims = tuple(int(h) for h in head_dims)
        n = len(self.widths)
        for opt in ("heads", "mlp", "depths", "head_dims"):
            if len(getattr(self, opt)) != n:
                raise ValueError(f"{opt} has {len(getattr(self, opt))} stages but widths has {n}")
        if any(h < 1 for h in self.head_dims):
            raise ValueError(f"head_dims {list(self.head_dims)} must be positive")
        for i in range(1, n):
            if min(self.widths[i]) < max(self.widths[i - 1]):
                raise ValueError(f"widths[{i}] = {list(self.widths[i])} must all be >= max(widths[{i - 1}]) = "
                                 f"{max(self.widths[i - 1])}: the reduction shortcut zero-pads channels")
        if self.patch < 1 or (stem == "conv" and self.patch % 2):
            raise ValueError(f"patch {patch} must be positive{' and even for the conv stem' if stem == 'conv' else ''}")
        grid = self.resolution // self.patch
        if self.resolution % self.patch or grid % (2 ** (n - 1)) or grid < 2 ** (n - 1):
            raise ValueError(f"resolution {resolution} / patch {patch} must be a whole grid divisible by "
                             f"2^(stages-1) = {2 ** (n - 1)} (each reduction halves the grid)")

    def options(self) -> dict[str, object]:
        return {"resolution": self.resolution, "patch": self.patch, "num_classes": self.num_classes,
                "stem": self.stem, "widths": [list(w) for w in self.widths],
                "heads": [list(h) for h in self.heads], "head_dims": list(self.head_dims),
                "mlp": [list(m) for m in self.mlp], "depths": [list(d) for d in self.depths]}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.resolution, self.resolution)

    # ---- structure ---------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.widths)

    def grid(self, stage: int) -> int:
        return self.resolution // self.patch // 2 ** stage

    def tokens(self, stage: int) -> int:
        return 1 + self.grid(stage) ** 2

    @cached_property
    def decisions(self) -> list[Decision]:
        out = []
        for i in range(self.num_stages):
            s = f"s{i + 1}"
            out += [Decision(f"{s}.depth", self.depths[i]), Decision(f"{s}.width", self.widths[i])]
            for j in range(max(self.depths[i])):
                off = (OFF,) if j >= min(self.depths[i]) else ()
                out += [Decision(f"{s}.b{j + 1}.heads", off + self.heads[i]),
                        Decision(f"{s}.b{j + 1}.mlp", off + self.mlp[i])]
        return out

    def stages(self, arch: Arch) -> list[Stage]:
        """The arch's stages (no validation)."""
        out, k = [], 0
        for i in range(self.num_stages):
            depth, width = arch.genes[k], arch.genes[k + 1]
            slots = arch.genes[k + 2:k + 2 + 2 * max(self.depths[i])]
            out.append(Stage(depth, width, tuple(zip(slots[0:2 * depth:2], slots[1:2 * depth:2]))))
            k += 2 + 2 * max(self.depths[i])
        return out

    def from_stages(self, stages: Sequence[Stage]) -> Arch:
        """The canonical arch of `stages` (inactive slots set to 0), validated."""
        if len(stages) != self.num_stages:
            raise ArchError(f"{self.name} needs {self.num_stages} stages, got {len(stages)}")
        genes: list[int] = []
        for i, st in enumerate(stages):
            if len(st.blocks) != st.depth:
                raise ArchError(f"s{i + 1}: depth {st.depth} but {len(st.blocks)} blocks")
            genes += [st.depth, st.width]
            for j in range(max(self.depths[i])):
                genes += list(st.blocks[j]) if j < len(st.blocks) else [OFF, OFF]
        return self.make(genes)

    def canonicalize(self, genes: Sequence[int]) -> Arch:
        """The valid arch nearest to raw genes (e.g. a sampler's proposal): slots beyond a stage's
        depth are switched off, and an active slot's OFF heads / mlp become the smallest choice."""
        genes = [int(g) for g in genes]
        if len(genes) != len(self.decisions):
            raise ArchError(f"{self.name} needs {len(self.decisions)} genes, got {len(genes)}")
        stages, k = [], 0
        for i in range(self.num_stages):
            depth, width = genes[k], genes[k + 1]
            slots = genes[k + 2:k + 2 + 2 * max(self.depths[i])]
            blocks = tuple((h if h != OFF else min(self.heads[i]), m if m != OFF else min(self.mlp[i]))
                           for h, m in zip(slots[0:2 * depth:2], slots[1:2 * depth:2]))
            stages.append(Stage(depth, width, blocks))
            k += 2 + 2 * max(self.depths[i])
        return self.from_stages(stages)

    def check_constraints(self, arch: Arch) -> None:
        for g, d in zip(arch.genes, self.decisions):
            if type(g) is not int:  # 3.0 == 3 would pass the choice check but change the JSON / key
                raise ArchError(f"{d.name}: gene {g!r} must be an integer; valid: {', '.join(map(str, d.choices))}")
        k = 0
        for i in range(self.num_stages):
            depth = arch.genes[k]
            for j in range(max(self.depths[i])):
                h, m = arch.genes[k + 2 + 2 * j], arch.genes[k + 3 + 2 * j]
                if j < depth and OFF in (h, m):
                    raise ArchError(f"s{i + 1} block {j + 1} is active (depth {depth}) but has heads={h} mlp={m}; "
                                    f"valid heads: {', '.join(map(str, self.heads[i]))}; "
                                    f"valid mlp: {', '.join(map(str, self.mlp[i]))}")
                if j >= depth and (h, m) != (OFF, OFF):
                    raise ArchError(f"s{i + 1} block {j + 1} is beyond depth {depth}, so its genes must be "
                                    f"{OFF} (canonical form); got heads={h} mlp={m}")
            k += 2 + 2 * max(self.depths[i])

    def size(self) -> float:
        """Exact number of distinct nets: per stage, widths x sum over depths of (heads x mlp)^depth."""
        total = 1.0
        for w, h, m, ds in zip(self.widths, self.heads, self.mlp, self.depths):
            total *= len(w) * sum(float(len(h) * len(m)) ** d for d in ds)
        return total

    # ---- stochastic operators ----------------------------------------------------------------
    def _random_blocks(self, stage: int, n: int, rng: np.random.Generator) -> tuple[tuple[int, int], ...]:
        h, m = self.heads[stage], self.mlp[stage]
        return tuple((h[rng.integers(len(h))], m[rng.integers(len(m))]) for _ in range(n))

    def sample(self, rng: np.random.Generator) -> Arch:
        stages = []
        for i in range(self.num_stages):
            d, w = self.depths[i], self.widths[i]
            depth, width = d[rng.integers(len(d))], w[rng.integers(len(w))]
            stages.append(Stage(depth, width, self._random_blocks(i, depth, rng)))
        return self.from_stages(stages)

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Change one active decision (a stage's depth or width, or an active block's heads or mlp).
        A deeper stage gets random new blocks at its end; a shallower one drops its last blocks."""
        stages = self.stages(self.validate(arch))
        targets = []
        for i, st in enumerate(stages):
            targets += [(i, "depth", -1)] * (len(self.depths[i]) > 1) + [(i, "width", -1)] * (len(self.widths[i]) > 1)
            targets += [(i, "heads", j) for j in range(st.depth) if len(self.heads[i]) > 1]
            targets += [(i, "mlp", j) for j in range(st.depth) if len(self.mlp[i]) > 1]
        if not targets:
            raise ArchError(f"{self.name}: nothing to mutate, every decision has a single choice")
        i, what, j = targets[rng.integers(len(targets))]
        st = stages[i]
        choices = {"depth": self.depths[i], "width": self.widths[i], "heads": self.heads[i], "mlp": self.mlp[i]}[what]
        current = {"depth": st.depth, "width": st.width}.get(what) if j < 0 else st.blocks[j][int(what == "mlp")]
        others = [c for c in choices if c != current]
        new = others[rng.integers(len(others))]
        if what == "depth":
            blocks = st.blocks[:new] + self._random_blocks(i, max(0, new - st.depth), rng)
            stages[i] = Stage(new, st.width, blocks)
        elif what == "width":
            stages[i] = Stage(st.depth, new, st.blocks)
        else:
            h, m = st.blocks[j]
            block = (new, m) if what == "heads" else (h, new)
            stages[i] = Stage(st.depth, st.width, st.blocks[:j] + (block,) + st.blocks[j + 1:])
        return self.from_stages(stages)

    # ---- block string ------------------------------------------------------------------------
    def format(self, arch: Arch) -> str:
        return " || ".join(f"s{i + 1}: d{st.depth} w{st.width} | " + " ".join(f"h{h}m{m}" for h, m in st.blocks)
                           for i, st in enumerate(self.stages(self.validate(arch))))

    @staticmethod
    def _int_token(tok: str, prefix: str, valid: tuple[int, ...], where: str) -> int:
        m = re.fullmatch(prefix + r"([1-9][0-9]{0,8})", tok)
        if m is None or int(m.group(1)) not in valid:
            raise ArchError(f"{where}: bad token {tok!r}; valid: {', '.join(f'{prefix}{v}' for v in valid)}")
        return int(m.group(1))

    def _block_token(self, tok: str, i: int, j: int) -> tuple[int, int]:
        heads, mlp = self.heads[i], self.mlp[i]
        valid = (f"h<heads>m<mlp> with heads in {', '.join(map(str, heads))} "
                 f"and mlp in {', '.join(map(str, mlp))}")
        m = _BLOCK.fullmatch(tok)
        if m is None or int(m.group(1)) not in heads or int(m.group(2)) not in mlp:
            raise ArchError(f"s{i + 1} block {j + 1}: bad token {tok!r}; valid: {valid}")
        return int(m.group(1)), int(m.group(2))

    def parse(self, text: str) -> Arch:
        parts = text.split("||")
        if len(parts) != self.num_stages:
            raise ArchError(f"{self.name} block string needs {self.num_stages} stages separated by '||', "
                            f"got {len(parts)}: {text.strip()!r}")
        stages = []
        for i, part in enumerate(parts):
            form = f"'s{i + 1}: d<depth> w<width> | <block> ...'"
            sections = part.split("|")
            head = sections[0].split()
            if len(sections) != 2 or len(head) != 3:
                raise ArchError(f"stage {i + 1} must read {form}, got {part.strip()!r}")
            label, dtok, wtok = head
            if label != f"s{i + 1}:":
                raise ArchError(f"stage {i + 1}: bad token {label!r}; valid: 's{i + 1}:'")
            depth = self._int_token(dtok, "d", self.depths[i], f"s{i + 1} depth")
            width = self._int_token(wtok, "w", self.widths[i], f"s{i + 1} width")
            tokens = sections[1].split()
            blocks = tuple(self._block_token(t, i, j) for j, t in enumerate(tokens))
            if len(blocks) != depth:
                raise ArchError(f"s{i + 1}: depth token d{depth} but {len(blocks)} block tokens follow: "
                                f"{' '.join(tokens)!r}")
            stages.append(Stage(depth, width, blocks))
        return self.from_stages(stages)

    # ---- layers and torch --------------------------------------------------------------------
    def layers(self, arch: Arch) -> list[LayerSpec]:
        stages = self.stages(self.validate(arch))
        specs = [embed_spec(self.stem, stages[0].width, self.patch, self.resolution)]
        for i, st in enumerate(stages):
            if i:
                specs.append(reduce_spec(self.grid(i - 1), stages[i - 1].width, st.width))
            specs += [block_spec(self.tokens(i), st.width, h, self.head_dims[i], m) for h, m in st.blocks]
        specs.append(head_spec(self.tokens(self.num_stages - 1), stages[-1].width, self.num_classes))
        return specs

    def all_layers(self) -> list[LayerSpec]:
        """Embeddings (per first-stage width) + blocks (per stage: width x heads x mlp) + reductions
        (per pair of adjacent widths) + heads (per last-stage width); 480 for the paper's sets."""
        last = self.num_stages - 1
        specs = [embed_spec(self.stem, w, self.patch, self.resolution) for w in self.widths[0]]
        for i in range(self.num_stages):
            if i:
                specs += [reduce_spec(self.grid(i - 1), a, b) for a in self.widths[i - 1] for b in self.widths[i]]
            specs += [block_spec(self.tokens(i), w, h, self.head_dims[i], m)
                      for w in self.widths[i] for h in self.heads[i] for m in self.mlp[i]]
        specs += [head_spec(self.tokens(last), w, self.num_classes) for w in self.widths[last]]
        return list({s.key: s for s in specs}.values())

    def build(self, arch: Arch, num_classes: int | None = None) -> "nn.Module":
        import torch.nn as nn
        specs = self.layers(arch)
        if num_classes is not None and num_classes != self.num_classes:
            specs[-1] = head_spec(specs[-1].input_shape[0], specs[-1].kwargs["dim"], int(num_classes))
        return nn.Sequential(*[build_layer(s) for s in specs])
