"""autotimm.private_apis: the one place that names private APIs of Lightning, rich, torch,
timm and W&B. These tests fail when an upgrade changes one of them: each name is checked on
real instances of the installed versions, in the shape its site uses (pyproject.toml bounds
those packages below the next minor version not yet checked)."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import io
import re
import threading
import time
import tokenize
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from autotimm import private_apis as api
from tests.conftest import ROOT


def test_every_private_signature_relied_on_is_there():
    assert api.signature_problems() == []


def test_a_changed_signature_fails_loudly():
    changed = {
        "lightning.pytorch.callbacks:RichProgressBar._init_progress": ("self", "trainer", "stage"),
        "lightning.pytorch.callbacks:ModelCheckpoint._gone": ("self",),
        "no_such_module:f": (),
    }
    problems = api.signature_problems(changed)
    assert len(problems) == 3
    assert "_init_progress: parameters ('self', 'trainer')" in problems[0]
    assert "_gone: missing" in problems[1] and "no_such_module:f: missing" in problems[2]


def test_each_override_still_overrides_a_private_hook_of_the_same_parameters():
    for override, hook in api.OVERRIDDEN.items():
        assert hook in api.SIGNATURES, hook
        owner, _, name = hook.rpartition(".")
        assert name in vars(api.locate(owner)), f"{hook} is no longer defined there"
        ours = tuple(inspect.signature(api.locate(override)).parameters)
        assert ours == tuple(inspect.signature(api.locate(hook)).parameters), override


# -- Lightning ------------------------------------------------------------------------------


class Probe(L.LightningModule):
    """Reads every Lightning internal the fence names, the way its sites do, in each step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.steps: list[dict] = []

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        trainer = getattr(self, api.TRAINER)
        connector = getattr(trainer, api.LOGGER_CONNECTOR)
        seen = {
            "trainer": trainer,
            "hook": getattr(self, api.CURRENT_FX_NAME),
            "global_step": trainer.global_step,
            "logs": getattr(connector, api.SHOULD_UPDATE_LOGS),
        }
        self.log("probe", loss, on_step=True, on_epoch=False)
        item = getattr(trainer, api.RESULTS).get(f"{seen['hook']}.probe")
        seen["fresh"] = item is not None and not item.has_reset
        item.reset()  # what StageLogs.retire_step_values does
        seen["reset"] = item.has_reset
        self.steps.append(seen)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_internals_during_a_fit(tmp_path: Path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    model = Probe()
    assert getattr(model, api.TRAINER) is None  # detached: None, not the property's error
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    trainer = L.Trainer(
        max_steps=4,
        log_every_n_steps=2,
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=4))

    assert [s["global_step"] for s in model.steps] == [0, 1, 2, 3]
    for seen in model.steps:
        assert seen["trainer"] is trainer and seen["hook"] == "training_step"
        # Lightning's decision, asked inside the step, is its documented rule
        assert seen["logs"] is ((seen["global_step"] + 1) % 2 == 0)
        # each step's log makes its result valid again after the previous step's reset
        assert seen["fresh"] and seen["reset"]
    path = getattr(checkpoint, api.CHECKPOINT_LAST_PATH)
    assert Path(path).is_file() and Path(path).name == "epoch=0-step=4.ckpt"
    assert getattr(checkpoint, api.CHECKPOINT_LAST_STEP) == trainer.global_step == 4
    decide = getattr(checkpoint, api.CHECKPOINT_SAVES_ON_TRAIN_EPOCH_END)
    assert isinstance(decide(trainer), bool)


def test_lightning_logger_internals(tmp_path: Path):
    from lightning.pytorch.loggers import CSVLogger, WandbLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    checked: list[str] = []

    class Writer(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            checked.append(self.log_dir)
            super()._check_log_dir_exists()

    csv = CSVLogger(tmp_path)
    assert getattr(csv, api.LOGGER_EXPERIMENT) is None  # made on first use
    getattr(csv, api.LOGGER_FS).makedirs(csv.root_dir, exist_ok=True)
    writer = Writer(log_dir=csv.log_dir)
    assert checked == [csv.log_dir]  # the writer's constructor runs the check
    assert not getattr(writer, api.LOGGER_FS).isfile(writer.metrics_file_path)
    assert isinstance(csv.experiment, ExperimentWriter)
    assert getattr(csv, api.LOGGER_EXPERIMENT) is csv.experiment
    init = getattr(WandbLogger(offline=True, save_dir=str(tmp_path)), api.WANDB_LOGGER_INIT)
    assert isinstance(init, dict) and init.get("dir") == str(tmp_path)  # wandb.init's keywords


def test_the_rich_redraw_thread_and_autotimms_replacement():
    import rich.live
    from lightning.pytorch.callbacks.progress.rich_progress import CustomProgress
    from rich.console import Console

    from autotimm.training.callbacks import _refresh_promptly

    lightning_thread = api.lightning_refresh_thread()
    assert lightning_thread is not None and issubclass(lightning_thread, rich.live._RefreshThread)
    # Lightning's bar display, as RichProgressBar._init_progress starts it
    progress = CustomProgress(console=Console(file=io.StringIO()), refresh_per_second=2)
    progress.start()
    try:
        live = progress.live
        old = getattr(live, api.LIVE_REFRESH_THREAD)
        assert type(old) is lightning_thread and old.is_alive()
        assert isinstance(old.done, threading.Event) and old.refresh_per_second == 2
        assert old.refresh_cond is False and old.live is live
        with getattr(live, api.LIVE_LOCK):  # a redraw holds it
            pass
        _refresh_promptly(live)
        new = getattr(live, api.LIVE_REFRESH_THREAD)
        assert new is not old and isinstance(new, lightning_thread) and new.is_alive()
    finally:
        started = time.perf_counter()
        progress.stop()  # joins the thread: prompt with autotimm's, not up to 0.5 s
        stopped = time.perf_counter() - started
    assert getattr(live, api.LIVE_REFRESH_THREAD) is None and not new.is_alive()
    assert stopped < 0.25, stopped


# -- torch and timm -------------------------------------------------------------------------


def test_nn_module_children_and_compiled_forward_slot():
    parent, child = torch.nn.Module(), torch.nn.Linear(2, 2)
    parent.child = child
    assert getattr(parent, api.MODULE_CHILDREN)["child"] is child
    assert getattr(child, api.COMPILED_CALL_IMPL) is None
    setattr(child, api.COMPILED_CALL_IMPL, lambda *args, **kwargs: "compiled")
    assert child(torch.ones(1, 2)) == "compiled"  # the slot `model.compile()` fills is called
    setattr(child, api.COMPILED_CALL_IMPL, None)
    assert child(torch.ones(1, 2)).shape == (1, 2)


def test_foreach_norm():
    norms = api.foreach_norm([torch.ones(4), torch.full((9,), 2.0)])
    assert [float(n) for n in norms] == [2.0, 6.0]


def test_schedulers_closed_form_lr_last_lr_and_in_step_marker():
    from torch.optim import lr_scheduler

    def optimizer() -> torch.optim.Optimizer:
        return torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)

    for cls, kwargs in (
        (lr_scheduler.CosineAnnealingLR, {"T_max": 10}),
        (lr_scheduler.StepLR, {"step_size": 3, "gamma": 0.5}),
        (lr_scheduler.MultiStepLR, {"milestones": [2, 5], "gamma": 0.5}),
    ):
        opt = optimizer()
        scheduler = cls(opt, **kwargs)
        for _ in range(4):
            opt.step()
            scheduler.step()
        closed_form = getattr(cls, api.CLOSED_FORM_LR)(scheduler)
        assert closed_form == pytest.approx(scheduler.get_last_lr()), cls.__name__
        setattr(scheduler, api.LAST_LR, [0.25])
        assert scheduler.get_last_lr() == [0.25]

    one_cycle = lr_scheduler.OneCycleLR(optimizer(), max_lr=1.0, total_steps=10)
    with pytest.warns(UserWarning, match="get_last_lr"):
        one_cycle.get_lr()  # outside step(): the warning the marker spares
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with api.lr_in_step()(one_cycle):
            one_cycle.get_lr()


def test_timm_cosine_step_update_goes_through_get_lr():
    from timm.scheduler import CosineLRScheduler

    asked: list[float] = []

    class Recording(CosineLRScheduler):
        def _get_lr(self, t):
            asked.append(t)
            return super()._get_lr(t)

    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = Recording(opt, t_initial=10, t_in_epochs=False)
    scheduler.step_update(3)
    assert 3 in asked and opt.param_groups[0]["lr"] == pytest.approx(scheduler._get_lr(3)[0])


# -- W&B ------------------------------------------------------------------------------------


def test_wandb_run_start_looks_for_launch_inputs_in_the_module_named():
    """Read from W&B's source: autotimm.app.loggers may have wrapped the method already."""
    module, _, run_class = api.WANDB_RUN.partition(":")
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == run_class]
    methods = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}
    method = methods[api.WANDB_JOB_INPUTS]
    imported = {n.module for n in ast.walk(method) if isinstance(n, ast.ImportFrom)}
    assert imported == {api.WANDB_LAUNCH_INPUTS}
    calls = [n for n in ast.walk(cls) if isinstance(n, ast.Attribute)]
    assert any(n.attr == api.WANDB_JOB_INPUTS for n in calls)  # called by the run's start
    package = Path(importlib.util.find_spec("wandb").origin).parent  # not imported: 1-3 s
    assert package.joinpath(*api.WANDB_LAUNCH_INPUTS.split(".")[1:]).with_suffix(".py").is_file()


# -- the fence ------------------------------------------------------------------------------

PRIVATE = re.compile(
    r"(?<!\w)(_trainer|_current_fx_name|_logger_connector|_results|_last_checkpoint_saved"
    r"|_last_global_step_saved|_should_save_on_train_epoch_end|_RefreshThread|_refresh_thread"
    r"|_enable_get_lr_call|_get_closed_form_lr|_last_lr|_compiled_call_impl|_modules"
    r"|_foreach_norm|_detect_and_apply_job_inputs|_update_metrics|_init_progress"
    r"|_save_checkpoint|_get_lr|_update(?=\()|_fs|_experiment|_check_log_dir_exists"
    r"|_wandb_init)\b|live\._lock\b|launch\.inputs\.internal"
)
# sites their owners move to the fence in the rewrites under way (drop each entry then)
NOT_YET_SWITCHED: dict[str, set[str]] = {}  # modules whose owners still have to switch


def _overridden_names() -> dict[str, set[str]]:
    """Module path -> the private hooks it overrides (its `def` and `super()` spell them)."""
    names: dict[str, set[str]] = {}
    for override in api.OVERRIDDEN:
        module, _, qualname = override.partition(":")
        path = module.replace(".", "/") + ".py"
        names.setdefault(path, set()).add(qualname.rpartition(".")[2])
    return names


def _code_lines(path: Path) -> dict[int, str]:
    """A module's lines of code: comments blanked, docstrings left out (prose may name a
    private API; only code must not)."""
    text = path.read_text()
    lines = dict(enumerate(text.splitlines(), 1))
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            doc = body[0].value
            if isinstance(doc, ast.Constant) and isinstance(doc.value, str):
                for number in range(doc.lineno, (doc.end_lineno or doc.lineno) + 1):
                    lines.pop(number, None)
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT and token.start[0] in lines:
            row, col = token.start
            lines[row] = lines[row][:col]
    return lines


def test_private_names_are_spelled_in_the_fence_only():
    sources = [*(ROOT / "autotimm").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]
    fence = ROOT / "autotimm" / "private_apis.py"
    allowed = _overridden_names()
    offenders = []
    for path in [*sources, ROOT / "train.py"]:
        if path == fence:
            continue
        relative = path.relative_to(ROOT).as_posix()
        for number, line in _code_lines(path).items():
            found = {m.group(0) for m in PRIVATE.finditer(line)}
            found -= allowed.get(relative, set()) | NOT_YET_SWITCHED.get(relative, set())
            if found:
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []
    assert PRIVATE.search(fence.read_text())  # the pattern does find them
    example = 'x._trainer; getattr(m, "_current_fx_name"); self.live._lock; on_save_checkpoint('
    assert [m.group(0) for m in PRIVATE.finditer(example)] == [
        "_trainer",
        "_current_fx_name",
        "live._lock",
    ]


def test_bounds_hold_the_installed_versions():
    """Each package with a private API fenced is bounded, and the bound admits what is here."""
    from importlib.metadata import version

    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ranges = {r.name: r.specifier for r in map(Requirement, deps)}
    for name in ("lightning", "timm", "rich", "wandb", "torch"):
        assert version(name) in ranges[name], name
        assert any(s.operator in ("<", "<=") for s in ranges[name]), f"{name}: no upper bound"
