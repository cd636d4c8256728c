"""One error hierarchy for every user-facing failure.

`UsageError` maps to exit code 2 (bad command-line input), every other `NasError` to exit code 1.
Messages always name the bad value and, where there is a finite set, the valid choices.
"""
from __future__ import annotations

from typing import Iterable


class NasError(Exception):
    """Base class of all errors the CLI reports as one clear line (exit code 1)."""


class UsageError(NasError):
    """Bad user input on the command line (exit code 2)."""


class UnknownNameError(UsageError, KeyError):
    """A name that is not in a registry."""

    def __init__(self, kind: str, name: object, valid: Iterable[str]) -> None:
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"
        super().__init__(f"unknown {kind} {name!r}; valid {plural}: {', '.join(self.valid) or '(none)'}")

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return self.args[0]


class ArchError(UsageError, ValueError):
    """A malformed or invalid architecture (bad block string, bad JSON, impossible choice)."""


class LatencyError(NasError):
    """A latency table problem: corrupt file, wrong space, missing entry."""


class MissingEntryError(LatencyError, KeyError):
    """A layer key that a latency table does not hold."""

    def __init__(self, key: str, table: str) -> None:
        self.key = key
        super().__init__(f"latency table {table} has no entry for layer {key!r}; profile it with "
                         f"'nas latency profile' on the target device")

    def __str__(self) -> str:
        return self.args[0]


class SearchError(NasError):
    """A search that cannot run as asked (e.g. a latency bound no architecture can meet)."""


def choices_text(values: Iterable[object]) -> str:
    """Render valid choices for an error message."""
    return ", ".join(str(v) for v in values)
