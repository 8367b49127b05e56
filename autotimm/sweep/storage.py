"""Where a study lives: its storage URL, made absolute, and shown without its password."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def absolute_storage(storage: Any) -> Any:
    """SQLite URLs with an absolute path (and its folder created); other URLs unchanged.

    Trials and reruns start in other working directories: a relative SQLite path would
    open another, empty study there.
    """
    if not isinstance(storage, str) or not storage.startswith("sqlite:///"):
        return storage
    path = storage[len("sqlite:///") :]
    if path in ("", ":memory:"):
        return storage
    path = os.path.abspath(os.path.expanduser(path))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def masked(storage: Any) -> str:
    """The storage URL without its password (for logs and results files)."""
    text = str(storage)
    try:
        from sqlalchemy.engine import make_url

        return make_url(text).__repr__() if "://" in text else text
    except Exception:
        return text
