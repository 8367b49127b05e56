"""The one shape of a bad-value error, `key=value: problem; accepted: ...`, and range checks.

Library objects name their own argument (`lr=-0.1: must be > 0`); a config group adds its
key in front (`optimizer.lr=-0.1: must be > 0`) through `under`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from numbers import Real
from typing import Any

from autotimm.user_errors import UserError


class ConfigValueError(UserError):
    """A bad value: which key, the value, and what is wrong (with the accepted values)."""

    def __init__(self, key: str, value: Any, problem: str) -> None:
        self.key, self.value, self.problem = key, value, problem
        super().__init__(f"{key}={value!r}: {problem}")

    def under(self, prefix: str) -> ConfigValueError:
        """The same error, its key inside `prefix` (a group or an argument name)."""
        return ConfigValueError(f"{prefix}.{self.key}", self.value, self.problem)


@contextmanager
def under(prefix: str) -> Iterator[None]:
    """Re-raise a ConfigValueError from the block with its key inside `prefix`."""
    try:
        yield
    except ConfigValueError as exc:
        raise exc.under(prefix) from exc


@contextmanager
def renamed(names: dict[str, str]) -> Iterator[None]:
    """Re-raise a ConfigValueError from the block with its key renamed by `names` (a config
    type's field -> the argument that fills it, e.g. `kwargs` -> `optimizer_kwargs`)."""
    try:
        yield
    except ConfigValueError as exc:
        if exc.key not in names:
            raise
        raise ConfigValueError(names[exc.key], exc.value, exc.problem) from exc


def close_matches(value: str, names: Iterable[str]) -> str:
    """'; close matches: a, b' for the names that look like `value` ('' when none do)."""
    close = difflib.get_close_matches(value, list(names), n=5, cutoff=0.6)
    return f"; close matches: {', '.join(close)}" if close else ""


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigValueError(key, value, "must be a number")
    return float(value)


def check_positive(key: str, value: Any) -> None:
    if not _number(key, value) > 0:
        raise ConfigValueError(key, value, "must be > 0")


def check_non_negative(key: str, value: Any, note: str = "") -> None:
    if not _number(key, value) >= 0:
        raise ConfigValueError(key, value, f"must be >= 0{note}")


def check_fraction(key: str, value: Any) -> None:
    """A probability or rate: 0 <= value < 1."""
    if not 0.0 <= _number(key, value) < 1.0:
        raise ConfigValueError(key, value, "must be in [0, 1)")


def check_choice(key: str, value: Any, accepted: Iterable[Any]) -> None:
    accepted = list(accepted)
    if value not in accepted:
        raise ConfigValueError(key, value, f"unknown; accepted: {accepted}")
