"""`python -m autotimm.dashboard SWEEP_DIR_OR_STORAGE [--study NAME] [--host H] [--port P]`:
optuna-dashboard for a sweep's study, live while the sweep runs.

The argument is a sweep folder (the study its optimization_results.yaml names, or its
study.journal / study.db), a study file (`.journal`, `.db`), or a storage: `journal:PATH`,
`sqlite:///PATH`, `postgresql://...`. Serves on 127.0.0.1 (this machine only) unless
`--host` says otherwise, prints the study's URL and runs until Ctrl-C. A folder, file or
study that does not exist is refused with one line (nothing is created).
Needs `pip install 'autotimm[dashboard]'`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from autotimm.sweep.dashboard import HOST, PORT, Dashboard, DashboardError, Served, open_studies
from autotimm.sweep.storage import JOURNAL, SQLITE, masked


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m autotimm.dashboard",
        description="optuna-dashboard for a sweep's Optuna study (live while it runs).",
    )
    p.add_argument(
        "target",
        metavar="SWEEP_DIR_OR_STORAGE",
        help="a sweep folder (outputs/sweeps/<name>), a study file, or a storage "
        "(journal:PATH, sqlite:///PATH, postgresql://...)",
    )
    p.add_argument("--study", help="the study to open (default: the folder's, or the only one)")
    p.add_argument(
        "--storage",
        help="with a sweep folder: its study's storage, when the folder's copy hides a password",
    )
    p.add_argument("--host", default=HOST, help=f"address to listen on (default {HOST})")
    p.add_argument("--port", type=int, default=PORT, help=f"port (default {PORT}; 0: any free)")
    return p


def _is_storage(target: str) -> bool:
    return target.startswith(JOURNAL) or "://" in target


def _folder_storage(folder: Path, storage: str | None) -> tuple[str, str | None]:
    """(storage, study name) of a sweep folder, as `python -m autotimm.compare` finds them."""
    from autotimm.compare.study import read_summary, stored_storage

    summary = read_summary(folder)
    name = summary.get("study_name")
    name = name if isinstance(name, str) else None
    if storage is not None:
        return storage, name
    url, note = stored_storage(folder, summary)
    if url is None:
        raise DashboardError(str(note).removeprefix("no Optuna plots: "))
    return url, name


def studies_of(target: str, study: str | None = None, storage: str | None = None) -> Served:
    """The storage the command line names, opened (DashboardError: one line, when not)."""
    if _is_storage(target):
        return open_studies(target, study)
    path = Path(target).expanduser()
    if path.is_dir():
        url, name = _folder_storage(path, storage)
        return open_studies(url, study or name)
    if path.is_file():
        prefix = SQLITE if path.suffix in (".db", ".sqlite", ".sqlite3") else JOURNAL
        return open_studies(f"{prefix}{path.resolve()}", study)
    raise DashboardError(f"no sweep folder or study file at {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; user errors print one short message and return 1."""
    from autotimm.user_errors import user_errors_reported

    args = parser().parse_args(argv)
    with user_errors_reported(exit_process=False) as ok:
        served = studies_of(args.target, args.study, args.storage)
        dashboard = Dashboard(served, args.host, args.port)
        if served.study_name is None:
            print(f"Optuna dashboard of {len(served.studies)} studies in {masked(served.url)}:")
        else:
            trials = served.trial_count()
            where = f"{trials} trials, {masked(served.url)}"
            print(f"Optuna dashboard of study {served.study_name!r} ({where}):")
        print(f"  {dashboard.url}\n(Ctrl-C stops it)", flush=True)
        try:
            dashboard.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
