"""Arch, registry and error behaviour."""
from __future__ import annotations

import pytest

from nas.core.arch import Arch
from nas.core.errors import ArchError, UnknownNameError
from nas.core.registry import Registry


def test_arch_json_round_trip_and_key() -> None:
    a = Arch("x", ("k3e3", 2, ("a", 1)))
    b = Arch.from_json(a.to_json())
    assert a == b and hash(a) == hash(b) and a.key == b.key and len(a.key) == 12
    assert Arch("x", ["k3e3", 2, ["a", 1]]) == a  # lists are frozen to tuples


@pytest.mark.parametrize("text", ["[1,2]", "{\"space\": 3}", "{\"space\": \"x\"}", "not json"])
def test_arch_json_errors(text: str) -> None:
    with pytest.raises(ArchError):
        Arch.from_json(text)


def test_registry_unknown_and_duplicate() -> None:
    r: Registry[int] = Registry("thing")
    r.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        r.register("a", 2)
    with pytest.raises(UnknownNameError) as info:
        r.get("b")
    assert str(info.value) == "unknown thing 'b'; valid things: a"
