"""The Optuna study behind a sweep folder, and the trials on its Pareto front.

A sweep folder (`outputs/sweeps/<name>/`) holds `optimization_results.yaml`, which names
the study (`study_name`, `storage`), and, when the study is a file there, `study.journal`
(the default) or `study.db` (SQLite). A storage URL with a password is written masked, so
such studies are opened with `--storage URL`.

optuna is imported only when a study is opened (`import autotimm.compare` stays light).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from autotimm.sweep.storage import STUDY_FILES, local_study, masked, open_storage, storage_file
from autotimm.user_errors import UserError

if TYPE_CHECKING:
    import optuna

SUMMARY_FILE = "optimization_results.yaml"
MASK = "***"  # how SQLAlchemy (autotimm.sweep.storage.masked) writes a password


class StudyError(UserError):
    """The study named on the command line (`--storage`) cannot be opened."""


@dataclass
class SweepStudy:
    """An opened study and the names of its objectives (for axis titles and file names)."""

    study: optuna.Study
    objective_names: list[str]

    @property
    def multi_objective(self) -> bool:
        return len(self.study.directions) > 1

    def front(self) -> list[int]:
        """The numbers of the trials on the Pareto front (multi-objective studies only)."""
        if not self.multi_objective:
            return []
        return sorted(t.number for t in self.study.best_trials)


def read_summary(folder: Path) -> dict[str, Any]:
    """optimization_results.yaml as a mapping ({} when absent or not a mapping)."""
    path = folder / SUMMARY_FILE
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def stored_storage(folder: Path, summary: dict[str, Any]) -> tuple[str | None, str | None]:
    """(the storage to open, None) from the sweep folder, or (None, why there is none)."""
    local = local_study(folder)
    url = summary.get("storage")
    if isinstance(url, str) and url:
        if MASK in url:
            return None, (
                f"the study's storage {url} hides its password: "
                "pass --storage URL for the Optuna plots"
            )
        database = storage_file(url)
        if database is None or database.is_file():
            return url, None
        if local:  # the sweep folder was moved or copied, its study file with it
            return local, None
        return None, f"no Optuna plots: the study's file {database} is gone"
    if local:
        return local, None
    files = " or ".join(STUDY_FILES)
    return None, f"no Optuna plots: no study in {folder} (no {SUMMARY_FILE} naming one, no {files})"


def _load(url: str, name: str | None) -> optuna.Study:
    """Open the study; StudyError (naming the storage and the studies in it) when it fails."""
    import optuna

    database = storage_file(url)
    if database is not None and not database.is_file():  # opening it would create it
        raise StudyError(f"no study file at {database} (storage {url})")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "trying to load" chatter
    try:
        storage = open_storage(url)
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise StudyError(f"no study {name!r} in {masked(url)}; studies there: {names}") from None
    except Exception as exc:  # SQLAlchemy and driver errors: bad URL, server down, ...
        raise StudyError(f"cannot open a study in {masked(url)}: {exc}") from exc
    finally:
        optuna.logging.set_verbosity(verbosity)


def _objective_names(summary: dict[str, Any], count: int, fallback: str | None) -> list[str]:
    """The objectives' metric names: the summary's `optimized_metric`, else the runs' one."""
    names = summary.get("optimized_metric")
    names = [names] if isinstance(names, str) else names
    if isinstance(names, list) and len(names) == count and all(isinstance(n, str) for n in names):
        return names
    if count == 1:
        return [fallback or "objective"]
    return [f"objective {i}" for i in range(count)]


def open_study(
    folder: Path, storage: str | None = None, objective: str | None = None
) -> tuple[SweepStudy | None, str | None]:
    """The study of a sweep folder, or (None, a one-line note saying why there is none).

    `storage` (the command line's `--storage`) overrides the folder's; a study it names
    that cannot be opened is an error (StudyError), one the folder names is a note.
    """
    summary = read_summary(folder)
    name = summary.get("study_name") if isinstance(summary.get("study_name"), str) else None
    if storage is not None:
        study = _load(storage, name)
    else:
        url, note = stored_storage(folder, summary)
        if url is None:
            return None, note
        try:
            study = _load(url, name)
        except StudyError as exc:
            return None, f"no Optuna plots: {exc}"
    names = _objective_names(summary, len(study.directions), objective)
    return SweepStudy(study, names), None


def slug(name: str) -> str:
    """`val/accuracy` -> `val_accuracy`, for file names."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "objective"


def mark_front(table: list[dict[str, Any]], front: list[int]) -> None:
    """Add a `pareto` column (after `objective`) saying which rows are on the front."""
    on_front = {str(number) for number in front}
    for row in table:
        marked: dict[str, Any] = {}
        for key, value in row.items():
            marked[key] = value
            if key == "objective":
                marked["pareto"] = row["trial"] in on_front
        row.clear()
        row.update(marked)
