"""A study in a journal file (Optuna's JournalStorage): the default storage of a sweep.

Several sweep processes can share one journal file, as with PostgreSQL, with no database
server: exactly n_trials finished, no duplicated values, a killed process's trial recovered
by the other. The same checks run on PostgreSQL in `make test-engines`.
"""

from __future__ import annotations

import pytest

from autotimm.sweep.storage import (
    absolute_storage,
    local_study,
    masked,
    open_storage,
    storage_file,
    sweep_storage,
)
from tests.shared_study import (
    check_a_killed_sweeps_trial_runs_again_in_the_other,
    check_two_sweeps_started_together,
)


def test_a_sweep_without_storage_gets_a_journal_file_in_its_folder(tmp_path):
    assert sweep_storage(None, tmp_path) == f"journal:{tmp_path / 'study.journal'}"
    assert sweep_storage("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_relative_journal_paths_become_absolute_with_their_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = absolute_storage("journal:studies/a.journal")
    assert storage == f"journal:{tmp_path / 'studies' / 'a.journal'}"
    assert (tmp_path / "studies").is_dir()
    assert storage_file(storage) == tmp_path / "studies" / "a.journal"
    assert masked(storage) == storage  # no password to hide
    assert absolute_storage("postgresql://u:p@h/d") == "postgresql://u:p@h/d"
    assert storage_file("postgresql://u:p@h/d") is None


def test_a_journal_study_is_found_in_its_sweep_folder(tmp_path):
    import optuna

    assert local_study(tmp_path) is None
    storage = f"journal:{tmp_path / 'study.journal'}"
    study = optuna.create_study(study_name="s", storage=open_storage(storage))
    study.tell(study.ask(), 1.0)
    assert local_study(tmp_path) == storage
    again = optuna.load_study(study_name="s", storage=open_storage(local_study(tmp_path)))
    assert [t.value for t in again.trials] == [1.0]


@pytest.mark.xdist_group("processes_at_once")
def test_two_sweeps_on_one_journal_file_run_exactly_n_trials(tmp_path):
    check_two_sweeps_started_together(tmp_path, f"journal:{tmp_path / 'shared.journal'}", "both")


@pytest.mark.xdist_group("processes_at_once")
def test_a_killed_sweeps_trial_on_a_journal_file_runs_again_in_the_other(tmp_path):
    storage = f"journal:{tmp_path / 'shared.journal'}"
    check_a_killed_sweeps_trial_runs_again_in_the_other(tmp_path, storage, "killed")
