"""HyTra: the fabric-like hybrid CNN-transformer space of BossNAS (Li et al., ICCV 2021).

Macro net (the paper and its released code): ResNet stem (conv 7x7/2 + max-pool, `width` channels,
1/4 resolution) -> `depth` (16) searchable layers -> global pool + linear classifier. The layers
move through a fabric of 4 scales, 1/4, 1/8, 1/16 and 1/32 of the input, with bottleneck widths
`width` x 1, 2, 4, 8 and outputs 4x that (256, 512, 1024, 2048 by default, as in ResNet-50).
Each layer picks a block, ResConv (ResNet bottleneck) or ResAtt (BoTNet-style self-attention
bottleneck, `head_dim`-wide heads, so 4 heads at 1/16 and 8 at 1/32), and whether to keep its
input's scale or down-sample by 2 to the next one - the searchable down-sampling positions.

Rules (`check_constraints`; the per-layer choices are also pruned to tokens some valid arch uses):
- at most 3 down-samplings (the fabric has 4 scales);
- ResAtt only at the two lowest resolutions, 1/16 and 1/32 (`att_from`=2; the paper restricts
  attention to them because global attention is too costly at 1/4 and 1/8);
- the layers form `len(min_scales)` equal blocks (the paper trains the fabric block-wise, 4 blocks
  of 4 layers) and block b's layers must be at scale `min_scales[b]` or lower, (0, 1, 2, 2) by
  default: the candidate scales of each block in the official search code (`stage_depths`).

Genes: one token per layer: ``conv``, ``conv.down``, ``att`` or ``att.down``; every gene sequence
is a different net, so the genes are canonical. Block string: the tokens separated by spaces,
e.g. BossNet-T0 ``conv conv.down conv.down conv conv att conv att.down att att conv att att att att att``.
"""
from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Sequence

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from nas.core.arch import Arch
from nas.core.errors import ArchError
from nas.core.layer import LayerSpec
from nas.core.space import Decision, SearchSpace
from search_spaces.hytra_ops import block_spec, stem_spec
from search_spaces.ops import MAX_CLASSES, MAX_RESOLUTION, build_layer, head_spec

if TYPE_CHECKING:
    import torch.nn as nn

NUM_SCALES = 4          # 1/4, 1/8, 1/16, 1/32
EXPANSION = 4           # bottleneck output = 4 x bottleneck width (ResNet)
TOKENS = ("conv", "conv.down", "att", "att.down")
ACTS = ("relu", "swish")
PAPER_MIN_SCALES = (0, 1, 2, 2)


def _split(token: str) -> tuple[str, int]:
    """'att.down' -> ('att', 1)."""
    op, _, down = token.partition(".")
    return op, int(bool(down))


def _scale_name(scale: int) -> str:
    return f"1/{4 * 2 ** scale}"


class HyTraSpace(SearchSpace):
    name = "hytra"
    presets = {
        # BossNet-T0 (BossNAS; released code `bossnet_T0`: stages of 1, 1, 5 and 9 blocks,
        # blocks [[C], [C], [C, C, C, A, C], [A, A, A, C, A, A, A, A, A]]). With the default options
        # (ReLU, no SE) it is "BossNet-T0 w/o SE" (3.4B MAdds); act='swish', se=True gives BossNet-T0.
        "bossnet-t0": "conv conv.down conv.down conv conv att conv att.down att att conv att att att att att",
        # The paper's hand-made HyTra nets (R50-T 4.1B, BoT50-T 3.9B MAdds): ResNet-50 (3, 4, 6, 3
        # blocks) and BoTNet-50 (its last stage self-attention) rebuilt from HyTra blocks.
        "r50-t": "conv conv conv conv.down conv conv conv conv.down conv conv conv conv conv conv.down conv conv",
        "bot50-t": "conv conv conv conv.down conv conv conv conv.down conv conv conv conv conv att.down att att",
    }

    def __init__(self, resolution: int = 224, num_classes: int = 1000, width: int = 64, depth: int = 16,
                 head_dim: int = 64, act: str = "relu", se: bool = False, att_from: int = 2,
                 min_scales: Sequence[int] = PAPER_MIN_SCALES) -> None:
        self.resolution, self.num_classes, self.width = int(resolution), int(num_classes), int(width)
        self.depth, self.head_dim, self.att_from = int(depth), int(head_dim), int(att_from)
        self.act, self.se = str(act), bool(se)
        self.min_scales = tuple(int(m) for m in min_scales)
        if not 32 <= self.resolution <= MAX_RESOLUTION or self.resolution % 32:
            raise ValueError(f"resolution {resolution} must be a positive multiple of 32 (the 1/32 scale), "
                             f"at most {MAX_RESOLUTION}")
        if not 1 <= self.num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes {num_classes} outside [1, {MAX_CLASSES}]")
        if not (1 <= self.width <= 1024 and 1 <= self.depth <= 64):
            raise ValueError(f"width {width} and depth {depth} must be in [1, 1024] and [1, 64]")
        if self.act not in ACTS:
            raise ValueError(f"act {act!r} unknown; valid: {', '.join(ACTS)}")
        if not 0 <= self.att_from <= NUM_SCALES:
            raise ValueError(f"att_from {att_from} must be a scale index 0..{NUM_SCALES - 1}, "
                             f"or {NUM_SCALES} for no attention")
        for s in range(self.att_from, NUM_SCALES):
            if self.head_dim < 1 or self.mid(s) % self.heads(s):
                raise ValueError(f"head_dim {head_dim}: the bottleneck width {self.mid(s)} at scale "
                                 f"{_scale_name(s)} must split into heads of {head_dim} channels")
        if not self.min_scales or len(self.min_scales) > self.depth \
                or any(not 0 <= m < NUM_SCALES for m in self.min_scales):
            raise ValueError(f"min_scales {list(self.min_scales)} must hold 1..depth ({self.depth}) scale "
                             f"indices in 0..{NUM_SCALES - 1}")
        if self._total_count() == 0:
            raise ValueError(f"min_scales {list(self.min_scales)} with depth {self.depth} admit no architecture "
                             f"(one layer down-samples at most once)")

    def options(self) -> dict[str, object]:
        return {"resolution": self.resolution, "num_classes": self.num_classes, "width": self.width,
                "depth": self.depth, "head_dim": self.head_dim, "act": self.act, "se": self.se,
                "att_from": self.att_from, "min_scales": list(self.min_scales)}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.resolution, self.resolution)

    # ---- fabric geometry ---------------------------------------------------------------------
    def mid(self, scale: int) -> int:
        """Bottleneck width at `scale` (doubles per scale)."""
        return self.width * 2 ** scale

    def channels(self, scale: int) -> int:
        return EXPANSION * self.mid(scale)

    def heads(self, scale: int) -> int:
        return max(1, self.mid(scale) // self.head_dim)

    def hw(self, scale: int) -> int:
        return self.resolution // 4 // 2 ** scale

    def min_scale(self, layer: int) -> int:
        return self.min_scales[layer * len(self.min_scales) // self.depth]

    def _step(self, layer: int, scale: int, token: str) -> int | None:
        """Output scale of `token` at `layer` on an input at `scale`, or None if the rules forbid it."""
        op, down = _split(token)
        out = scale + down
        if out >= NUM_SCALES or out < self.min_scale(layer) or (op == "att" and out < self.att_from):
            return None
        return out

    @cached_property
    def _counts(self) -> tuple[list[list[int]], list[list[int]]]:
        """fwd[i][s]: valid prefixes of i layers ending at scale s; bwd[i][s]: valid completions of
        layers i.. from scale s. Exact integers (the size and uniform sampling use them)."""
        fwd = [[0] * NUM_SCALES for _ in range(self.depth + 1)]
        bwd = [[0] * NUM_SCALES for _ in range(self.depth + 1)]
        fwd[0][0] = 1
        for i in range(self.depth):
            for s in range(NUM_SCALES):
                for t in TOKENS:
                    out = self._step(i, s, t)
                    if out is not None:
                        fwd[i + 1][out] += fwd[i][s]
        bwd[self.depth] = [1] * NUM_SCALES
        for i in reversed(range(self.depth)):
            for s in range(NUM_SCALES):
                bwd[i][s] = sum(bwd[i + 1][out] for t in TOKENS if (out := self._step(i, s, t)) is not None)
        return fwd, bwd

    def _total_count(self) -> int:
        return self._counts[1][0][0]

    def _feasible(self, layer: int, scale: int, token: str) -> bool:
        """Whether some valid arch has `token` at `layer` with its input at `scale`."""
        fwd, bwd = self._counts
        out = self._step(layer, scale, token)
        return fwd[layer][scale] > 0 and out is not None and bwd[layer + 1][out] > 0

    @cached_property
    def decisions(self) -> list[Decision]:
        return [Decision(f"l{i}", tuple(t for t in TOKENS if any(self._feasible(i, s, t) for s in range(NUM_SCALES))))
                for i in range(self.depth)]

    def size(self) -> float:
        """Exact number of architectures (counted over the fabric)."""
        return float(self._total_count())

    # ---- validity ----------------------------------------------------------------------------
    def scales(self, arch: Arch) -> list[int]:
        """Input scale of every layer, then the output scale of the last (no validation)."""
        out = [0]
        for g in arch.genes:
            out.append(out[-1] + _split(g)[1])
        return out

    def check_constraints(self, arch: Arch) -> None:
        scale = 0
        for i, token in enumerate(arch.genes):
            op, down = _split(token)
            out = scale + down
            if out >= NUM_SCALES:
                raise ArchError(f"layer {i}: {token!r} would down-sample below {_scale_name(NUM_SCALES - 1)}; "
                                f"the fabric has {NUM_SCALES} scales, so at most {NUM_SCALES - 1} layers may "
                                f"down-sample")
            if op == "att" and out < self.att_from:
                raise ArchError(f"layer {i}: {token!r} would run attention at scale {_scale_name(out)}; "
                                f"ResAtt only at scales {', '.join(map(_scale_name, range(self.att_from, NUM_SCALES)))}"
                                f"; valid here: conv, conv.down")
            if out < self.min_scale(i):
                raise ArchError(f"layer {i}: output at scale {_scale_name(out)}, but layers of block "
                                f"{i * len(self.min_scales) // self.depth} must be at {_scale_name(self.min_scale(i))} "
                                f"or lower resolution; down-sample earlier")
            scale = out

    # ---- stochastic operators ----------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Arch:
        """Uniform over all valid archs: each layer's token is drawn in proportion to the number of
        valid completions it leaves."""
        _, bwd = self._counts
        genes, scale = [], 0
        for i in range(self.depth):
            options = [(t, out) for t in TOKENS if (out := self._step(i, scale, t)) is not None]
            weights = np.array([float(bwd[i + 1][out]) for _, out in options])
            token, scale = options[int(rng.choice(len(options), p=weights / weights.sum()))]
            genes.append(token)
        return self.make(genes)

    def _neighbours(self, arch: Arch) -> list[Arch]:
        """Valid archs one move away: one layer's token changed, or one down-sampling moved to the
        adjacent layer (two genes swap their '.down'); in a fixed order."""
        genes = list(arch.genes)
        candidates = []
        for i, g in enumerate(genes):
            candidates += [genes[:i] + [t] + genes[i + 1:] for t in self.decisions[i].choices if t != g]
        for i in range(self.depth - 1):
            (a, da), (b, db) = _split(genes[i]), _split(genes[i + 1])
            if da != db:
                swapped = [f"{a}.down" if db else a, f"{b}.down" if da else b]
                candidates.append(genes[:i] + swapped + genes[i + 2:])
        out = []
        for c in candidates:
            try:
                out.append(self.make(c))
            except ArchError:
                continue
        return list(dict.fromkeys(out))

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """A random valid neighbour: a block swapped (conv <-> att), a down-sampling added or removed,
        or a down-sampling position moved by one layer."""
        options = self._neighbours(self.validate(arch))
        if not options:
            raise ArchError(f"could not mutate {self.format(arch)!r}: no valid neighbouring arch")
        return options[int(rng.integers(len(options)))]

    # ---- block string ------------------------------------------------------------------------
    def format(self, arch: Arch) -> str:
        return " ".join(self.validate(arch).genes)

    def parse(self, text: str) -> Arch:
        tokens = text.split()
        for i, tok in enumerate(tokens):
            if tok not in TOKENS:
                raise ArchError(f"hytra layer {i}: bad token {tok!r}; valid: {', '.join(TOKENS)}")
            if i < self.depth and tok not in self.decisions[i].choices:
                raise ArchError(f"hytra layer {i}: token {tok!r} is impossible at this layer (no valid arch has it); "
                                f"valid here: {', '.join(self.decisions[i].choices)}")
        if len(tokens) != self.depth:
            raise ArchError(f"hytra block string needs {self.depth} layer tokens, got {len(tokens)}: {text.strip()!r}")
        return self.make(tokens)

    # ---- layers and torch --------------------------------------------------------------------
    def _block(self, layer: int, scale: int, token: str) -> LayerSpec:
        op, down = _split(token)
        out = scale + down
        cin = self.width if layer == 0 else self.channels(scale)
        return block_spec(op, cin, self.channels(out), self.mid(out), 1 + down, self.hw(scale), self.act,
                          se=self.se, heads=self.heads(out))

    def _stem(self) -> LayerSpec:
        return stem_spec(self.width, self.resolution, self.act)

    def _head(self, scale: int, classes: int | None = None) -> LayerSpec:
        hw = self.hw(scale)
        return head_spec(self.channels(scale), 0, classes or self.num_classes, (hw, hw))

    def layers(self, arch: Arch) -> list[LayerSpec]:
        scales = self.scales(self.validate(arch))
        body = [self._block(i, scales[i], g) for i, g in enumerate(arch.genes)]
        return [self._stem(), *body, self._head(scales[-1])]

    def fabric_layers(self) -> list[list[LayerSpec]]:
        """Per position of `layers()` (stem, each of the `depth` blocks, head): every distinct layer a
        valid arch may put there (per block: feasible input scale x token; a head per reachable final
        scale). The weight-sharing supernet holds one module for each."""
        fwd, _ = self._counts
        out = [[self._stem()]]
        for i in range(self.depth):
            specs = [self._block(i, s, t) for s in range(NUM_SCALES) for t in TOKENS if self._feasible(i, s, t)]
            out.append(list({sp.key: sp for sp in specs}.values()))
        out.append([self._head(s) for s in range(NUM_SCALES) if fwd[self.depth][s] > 0])
        return out

    def all_layers(self) -> list[LayerSpec]:
        """Every distinct layer any valid arch has, deduplicated by key."""
        return list({s.key: s for specs in self.fabric_layers() for s in specs}.values())

    def build(self, arch: Arch, num_classes: int | None = None) -> "nn.Module":
        import torch.nn as nn
        specs = self.layers(arch)
        if num_classes is not None:
            specs[-1] = self._head(self.scales(arch)[-1], int(num_classes))
        return nn.Sequential(*[build_layer(s) for s in specs])
