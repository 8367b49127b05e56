"""One error type for user mistakes and one wrapper that reports them (autotimm.user_errors):
a short line and status 1, the traceback with HYDRA_FULL_ERROR=1, trials' errors left to
the sweeper."""

from __future__ import annotations

import ast

import pytest

from autotimm.checks import ConfigValueError
from autotimm.user_errors import CorruptImageError, UserError, user_errors_reported
from tests.conftest import ROOT


def test_a_user_error_is_one_line_and_status_1(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as info, user_errors_reported():
        raise ConfigValueError("optimizer.lr", -0.1, "must be > 0")
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "Error: optimizer.lr=-0.1: must be > 0" in err
    assert "Traceback" not in err and "HYDRA_FULL_ERROR=1" in err


def test_a_command_gets_its_status_instead_of_an_exit(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with user_errors_reported(exit_process=False) as ok:
        raise CorruptImageError("cannot read image /x/broken.png: truncated")
    assert not ok
    assert "Error: cannot read image /x/broken.png" in capsys.readouterr().err
    with user_errors_reported(exit_process=False) as fine:
        pass
    assert fine


def test_tracebacks_stay_for_bugs_and_on_request(monkeypatch):
    with pytest.raises(RuntimeError), user_errors_reported():  # not a user error
        raise RuntimeError("a bug")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(UserError), user_errors_reported():
        raise UserError("shown with its traceback")


def test_config_errors_are_user_errors():
    from autotimm.compare.study import StudyError
    from autotimm.records.results import RecordError
    from autotimm.sweep.engine_checks import SweepSetupError

    for kind in (ConfigValueError, SweepSetupError, StudyError, RecordError):
        assert issubclass(kind, UserError), kind


def _code_strings(path) -> list[str]:
    """String constants of a module's code (docstrings left out)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings
    ]  # fmt: skip


def test_one_wrapper_reads_hydra_full_error():
    """Only the wrapper decides between the short line and the traceback."""
    paths = [*ROOT.glob("autotimm/**/*.py"), *ROOT.glob("hydra_plugins/**/*.py"), ROOT / "train.py"]
    readers = sorted(
        str(p.relative_to(ROOT)) for p in paths if "HYDRA_FULL_ERROR" in _code_strings(p)
    )
    assert readers == ["autotimm/user_errors.py"]


def test_an_untrusted_target_says_how_to_trust_it(monkeypatch):
    """Hydra 1.4 refuses a `_target_` outside the trusted packages; the message names the
    target and the environment variable that trusts its package."""
    from hydra.utils import instantiate

    from autotimm.user_errors import find_user_error
    from autotimm.utils import trusted_targets, trusting_targets

    node = {"callbacks": {"mine": {"_target_": "collections.OrderedDict"}}}
    with trusting_targets(), pytest.raises(Exception) as info:
        instantiate(node)
    found = find_user_error(info.value)
    assert str(found) == (
        "callbacks.mine: _target_ collections.OrderedDict is not among the targets autotimm's "
        "configs may call (autotimm.utils.TRUSTED_TARGETS); trust its package with "
        "AUTOTIMM_TRUSTED_TARGETS='collections.*' (comma-separated for several)"
    )
    monkeypatch.setenv("AUTOTIMM_TRUSTED_TARGETS", "collections.*, mypkg.Thing")
    assert trusted_targets()[-2:] == ["collections.*", "mypkg.Thing"]
    with trusting_targets():
        assert instantiate(node)["callbacks"]["mine"] == {}
