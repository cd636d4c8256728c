"""`LayerSpec`: one layer of a network as data, the unit latency tables are keyed by.

A LayerSpec names an op from `search_spaces.ops.OPS` plus its parameters and the input/output
shapes (batch excluded). Its `key` is stable text, so tables written today stay valid tomorrow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

Param = int | float | str | bool


@dataclass(frozen=True)
class LayerSpec:
    op: str
    params: tuple[tuple[str, Param], ...]
    input_shape: tuple[int, ...]   # without batch, e.g. (C, H, W) or (N_tokens, D)
    output_shape: tuple[int, ...]

    @classmethod
    def make(cls, op: str, params: Mapping[str, Param], input_shape: tuple[int, ...],
             output_shape: tuple[int, ...]) -> "LayerSpec":
        return cls(op, tuple(sorted(params.items())), tuple(input_shape), tuple(output_shape))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def key(self) -> str:
        """e.g. ``mbconv(cin=24,cout=40,e=6,k=5,s=2)@24x56x56``."""
        args = ",".join(f"{k}={v}" for k, v in self.params)
        return f"{self.op}({args})@{'x'.join(map(str, self.input_shape))}"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "params": dict(self.params), "input_shape": list(self.input_shape),
                "output_shape": list(self.output_shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LayerSpec":
        return cls.make(data["op"], data["params"], tuple(data["input_shape"]), tuple(data["output_shape"]))
