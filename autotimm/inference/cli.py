"""What the predict/export command lines share: user errors as one short message."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class Outcome:
    """Truthy until a user error was reported."""

    def __init__(self) -> None:
        self.ok = True

    def __bool__(self) -> bool:
        return self.ok


@contextmanager
def reported() -> Iterator[Outcome]:
    """Print a user error (bad path, not a checkpoint, failed parity) as one line; other
    exceptions keep their traceback."""
    from autotimm.user_errors import find_user_error

    outcome = Outcome()
    try:
        yield outcome
    except Exception as exc:
        error = find_user_error(exc)
        if error is None:
            raise
        print(f"Error: {error}", file=sys.stderr)
        outcome.ok = False
