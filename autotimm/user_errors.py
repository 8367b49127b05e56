"""User errors (a bad config value, missing data): one short message, no traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from autotimm.utils import in_multirun


class UserError(ValueError):
    """A problem with the user's config or data (reported without a traceback)."""


class CorruptImageError(OSError):
    """An image file is missing or cannot be decoded; the message names the file.

    An OSError (what reading a file raises), reported like a UserError."""


def find_user_error(exc: BaseException) -> BaseException | None:
    """The config/data problem behind `exc` (unwrapping Hydra's instantiate errors), if any."""
    from omegaconf.errors import OmegaConfBaseException

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(
            seen, (ValueError, FileNotFoundError, CorruptImageError, OmegaConfBaseException)
        ):
            return seen
        if isinstance(seen, RuntimeError) and "could not be fetched offline" in str(seen):
            return seen
        if "not in the Hydra execution whitelist" in str(seen):
            return untrusted_target(seen)
        seen = seen.__cause__
    return None


def untrusted_target(error: BaseException) -> UserError:
    """Hydra's refusal of a `_target_` outside autotimm.utils.TRUSTED_TARGETS, with the way
    to trust it (Hydra's own message asks for a code change)."""
    import re

    from autotimm.utils import ENV_TRUSTED_TARGETS

    found = re.search(r"Target '([^']+)'", str(error))
    target = found.group(1) if found else "?"
    key = re.search(r"full_key: (\S+)", str(error))
    package = target.rpartition(".")[0] or target
    return UserError(
        f"{key.group(1) + ': ' if key else ''}_target_ {target} is not among the targets "
        f"autotimm's configs may call (autotimm.utils.TRUSTED_TARGETS); trust its package "
        f"with {ENV_TRUSTED_TARGETS}='{package}.*' (comma-separated for several)"
    )


def print_user_error(error: BaseException) -> None:
    """One short, readable line (plus the cause) instead of a traceback."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True)
    # soft_wrap: paths in the message stay whole (copyable)
    message = escape(str(error))  # messages contain [lists] that are not rich markup
    console.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)
    console.print("(set HYDRA_FULL_ERROR=1 for the full traceback)", style="dim")


class Report:
    """Truthy until a user error was reported: a command's exit status (0 or 1)."""

    def __init__(self) -> None:
        self.ok = True

    def __bool__(self) -> bool:
        return self.ok


@contextmanager
def user_errors_reported(
    *, exit_process: bool = True, trial_raises: bool = True
) -> Iterator[Report]:
    """The one wrapper of every entry point: a user error (`find_user_error`) becomes one
    short message on stderr and status 1; other errors keep their traceback, and so does
    every error with HYDRA_FULL_ERROR=1.

    `exit_process=False`: no sys.exit; the yielded Report turns false, for a command's
    `main()` that returns its status (predict, export, compare). `trial_raises`: inside a
    sweep trial errors propagate, so the sweeper records the trial as failed (False for the
    sweep's own set-up, which has no trial to fail).
    """
    report = Report()
    try:
        yield report
    except Exception as exc:
        user_error = find_user_error(exc)
        if user_error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if trial_raises and in_multirun():
            raise
        print_user_error(user_error)
        if exit_process:
            sys.exit(1)
        report.ok = False
