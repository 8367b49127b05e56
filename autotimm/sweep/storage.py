"""Where a study lives: its storage (a journal file, SQLite, PostgreSQL), made absolute,
opened for Optuna, and shown without its password.

A sweep with no `hydra.sweeper.storage` keeps its study in a journal file in its sweep
directory (`journal:<sweep dir>/study.journal`, Optuna's JournalStorage): plain appends under
a file lock, safe on a shared filesystem where trials on other nodes report to it, with no
database server. `journal:PATH`, `sqlite:///PATH` and database URLs (`postgresql://...`)
name a storage explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

JOURNAL = "journal:"
SQLITE = "sqlite:///"
JOURNAL_FILE = "study.journal"  # the default storage, in the sweep directory
STUDY_FILES = (JOURNAL_FILE, "study.db")  # what a sweep directory may hold, in that order


def sweep_storage(storage: Any, sweep_dir: str | os.PathLike[str]) -> Any:
    """The sweep's storage: the one configured, else the journal file in its sweep dir."""
    if storage:
        return storage
    return f"{JOURNAL}{Path(sweep_dir) / JOURNAL_FILE}"


def storage_file(storage: Any) -> Path | None:
    """The file of a journal or SQLite storage (None: a database server, or in memory)."""
    if not isinstance(storage, str):
        return None
    for prefix in (JOURNAL, SQLITE):
        if storage.startswith(prefix):
            path = storage[len(prefix) :]
            return None if path in ("", ":memory:") else Path(path).expanduser()
    return None


def absolute_storage(storage: Any) -> Any:
    """Journal and SQLite storages with an absolute path (its folder created); other URLs
    unchanged.

    Trials and reruns start in other working directories: a relative path would open
    another, empty study there.
    """
    path = storage_file(storage)
    if path is None:
        return storage
    prefix = JOURNAL if storage.startswith(JOURNAL) else SQLITE
    path = path.absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{prefix}{path}"


def open_storage(storage: Any) -> Any:
    """What Optuna's functions take: a JournalStorage for `journal:PATH`, else the URL."""
    if not (isinstance(storage, str) and storage.startswith(JOURNAL)):
        return storage
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(storage_file(storage))))


def local_study(folder: Path) -> str | None:
    """The storage of the study file in a sweep folder (study.journal or study.db), if any."""
    for name in STUDY_FILES:
        path = Path(folder) / name
        if path.is_file():
            return f"{JOURNAL if name == JOURNAL_FILE else SQLITE}{path.resolve()}"
    return None


def masked(storage: Any) -> str:
    """The storage URL without its password (for logs and results files)."""
    text = str(storage)
    if text.startswith(JOURNAL):
        return text
    try:
        from sqlalchemy.engine import make_url

        return make_url(text).__repr__() if "://" in text else text
    except Exception:
        return text
