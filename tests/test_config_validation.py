"""Config validation on one path: every bad value of every group fails when its own node
is instantiated (autotimm.app.config_nodes.validate_groups), before any data loads, with one
short message naming the value and the accepted ones."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from autotimm.app.config_nodes import validate_groups
from autotimm.checks import ConfigValueError
from tests.conftest import ROOT, run_train

# data that would fail loudly (with a data error naming this path) if it were ever read
NO_DATA = ["print_config=false", "data=image_folder", "data.root=/nonexistent/autotimm-data"]

# id -> (overrides, fragments the message must contain: the key=value and the accepted ones)
BAD_VALUES = {
    "optimizer-lr": (["optimizer.lr=-0.1"], ["optimizer.lr=-0.1", "must be > 0"]),
    "optimizer-weight-decay": (
        ["optimizer.weight_decay=-1"],
        ["optimizer.weight_decay=-1", "must be >= 0"],
    ),
    "optimizer-name": (
        ["optimizer.name=lamb2"],
        ["optimizer.name='lamb2'", "close matches: lamb", "accepted:", "'adamw'", "'sgd'"],
    ),
    "optimizer-custom-class": (
        ["optimizer.name={class: torch.optim.NoSuchOpt}"],
        ["optimizer.name=", "torch.optim.NoSuchOpt", "cannot be imported"],
    ),
    "optimizer-kwargs": (
        ["+optimizer.kwargs.bogus=1"],
        ["optimizer.kwargs={'bogus': 1}", "bogus", "accepted:", "'betas'", "'eps'"],
    ),
    "optimizer-kwargs-lr": (
        ["+optimizer.kwargs.lr=0.1"],
        ["optimizer.kwargs={'lr': 0.1}", "sets ['lr']", "own keys (lr, weight_decay)"],
    ),
    "optimizer-unknown-key": (
        ["+optimizer.bogus=1"],
        ["optimizer.bogus=1", "unknown key", "'lr'", "'weight_decay'", "'kwargs'"],
    ),
    "scheduler-name": (
        ["scheduler.name=cosinus"],
        ["scheduler.name='cosinus'", "close matches: cosine", "'plateau'", "'onecycle'"],
    ),
    "scheduler-kwargs": (
        ["scheduler=step", "+scheduler.kwargs.bogus=1"],
        ["scheduler.kwargs=", "'bogus'", "accepted:", "'step_size'", "'warmup_epochs'"],
    ),
    "scheduler-interval": (
        ["+scheduler.kwargs.interval=hour"],
        ["scheduler.kwargs={'interval': 'hour'}", "['step', 'epoch']"],
    ),
    "scheduler-warmup-plateau": (
        ["scheduler=plateau", "+scheduler.kwargs.warmup_epochs=1"],
        ["scheduler.kwargs=", "'warmup_epochs': 1", "'plateau'", "'cosine'"],
    ),
    "scheduler-with-optimizer": (
        ["optimizer=adagrad", "scheduler=onecycle"],
        ["scheduler.kwargs={'pct_start': 0.25}", "Adagrad", "momentum"],
    ),
    "backbone-model-name": (
        ["backbone.model_name=resnet5O"],
        ["backbone.model_name='resnet5O'", "not a timm model", "resnet50", "list_backbones"],
    ),
    "backbone-unknown-key": (
        ["+backbone.bogus=1"],
        ["backbone.bogus=1", "unknown key", "'model_name'", "'drop_path_rate'"],
    ),
    "backbone-drop-rate": (["backbone.drop_rate=1.0"], ["backbone.drop_rate=1.0", "[0, 1)"]),
    "regularization-drop-path-rate": (
        ["regularization.drop_path_rate=1.5"],
        ["regularization.drop_path_rate=1.5", "must be in [0, 1)"],
    ),
    "regularization-label-smoothing": (
        ["regularization.label_smoothing=1.0"],
        ["regularization.label_smoothing=1.0", "[0, 1)"],
    ),
    "regularization-mixup": (
        ["regularization.mixup_alpha=-0.2"],
        ["regularization.mixup_alpha=-0.2", ">= 0"],
    ),
    "regularization-cutmix": (
        ["regularization.cutmix_alpha=-1"],
        ["regularization.cutmix_alpha=-1", ">= 0"],
    ),
    "regularization-head-dropout": (
        ["regularization.head_dropout=1.0"],
        ["regularization.head_dropout=1.0", "[0, 1)"],
    ),
    "regularization-not-a-number": (
        ["regularization.label_smoothing=lots"],
        ["regularization.label_smoothing='lots'", "must be a number"],
    ),
    "metric-class": (
        ["metrics.accuracy.metric_class=Acuracy"],
        ["metrics.accuracy.metric_class='Acuracy'", "close matches: Accuracy", "custom"],
    ),
    "metric-backend": (
        ["++metrics.accuracy.backend=tm"],
        ["metrics.accuracy.backend='tm'", "['torchmetrics', 'custom']"],
    ),
    "metric-stage": (
        ["metrics.accuracy.stages=[training]"],
        ["metrics.accuracy.stages=['training']", "['train', 'val', 'test']"],
    ),
    "metric-preds": (
        ["++metrics.accuracy.preds=odds"],
        ["metrics.accuracy.preds='odds'", "['probs', 'logits', 'labels']"],
    ),
    "metric-never-logged": (
        ["++metrics.accuracy.log_on_epoch=false"],
        ["metrics.accuracy.log_on_epoch=False", "never be logged"],
    ),
    "metric-params": (
        ["metrics.f1_macro.params.average=macroo"],
        ["metrics.f1_macro.params=", "macroo", "'micro'", "accepted:", "'average'"],
    ),
    "metric-unknown-key": (
        ["+metrics.accuracy.bogus=1"],
        ["metrics.accuracy=", "unknown keys ['bogus']", "'metric_class'", "'stages'"],
    ),
    "metric-custom-class": (
        ["++metrics.accuracy.backend=custom", "metrics.accuracy.metric_class=no.such.Metric"],
        ["metrics.accuracy.metric_class='no.such.Metric'", "cannot be imported"],
    ),
}


@pytest.fixture
def data_spy(monkeypatch):
    """Records every construction, prepare_data and setup of the data module."""
    from autotimm.data import ImageDataModule

    calls: list[str] = []
    for method in ("__init__", "prepare_data", "setup"):
        original = getattr(ImageDataModule, method)

        def spy(self, *args, _name=method, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ImageDataModule, method, spy)
    return calls


def _assert_names(message: str, expected: list[str]) -> None:
    for fragment in expected:
        assert fragment in message, (fragment, message)
    # the short message: Hydra's wrapper is unwrapped
    assert "Error in call to target" not in message and "full_key" not in message
    assert "\n" not in message


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_value_fails_before_the_data_loads(compose, data_spy, case):
    """Through the run itself (autotimm.app.run.train), with data that fails if read."""
    from autotimm.app.run import train

    overrides, expected = BAD_VALUES[case]
    cfg = compose([*NO_DATA, *overrides])
    with pytest.raises(ConfigValueError) as info:
        train(cfg)
    _assert_names(str(info.value), expected)
    assert data_spy == [], "the data module was touched before the config was checked"


def _error_line(output: str) -> str:
    """The one line train.py prints for a user error (whitespace already collapsed)."""
    return output.split("Error: ", 1)[-1].split(" (set HYDRA_FULL_ERROR")[0]


def test_train_py_reports_the_config_error_not_the_data_error(tmp_path):
    """End to end: one short line naming the value; the missing data is never reached."""
    overrides, expected = BAD_VALUES["optimizer-lr"]
    proc = run_train(tmp_path, *NO_DATA, "logger=csv", *overrides, check=False)
    output = " ".join((proc.stderr + proc.stdout).split())  # rich wraps long lines
    assert proc.returncode == 1, output[-2000:]
    assert "Traceback" not in proc.stderr
    _assert_names(_error_line(output), expected)
    assert "/nonexistent/autotimm-data" not in output


@pytest.mark.parametrize("case", ["backbone-model-name", "metric-class"])
def test_the_app_reports_the_config_error_not_the_data_error(run_app, case):
    """The same app as train.py, in this process (no interpreter start-up per case)."""
    overrides, expected = BAD_VALUES[case]
    app = run_app(*NO_DATA, "logger=csv", *overrides)
    assert app.code == 1, app.output[-2000:]
    _assert_names(_error_line(app.output), expected)
    assert "/nonexistent/autotimm-data" not in app.output


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


GOOD = [
    (g, o) for g in ("optimizer", "scheduler", "regularization", "metrics") for o in _options(g)
]


@pytest.mark.parametrize(("group", "option"), GOOD, ids=[f"{g}={o}" for g, o in GOOD])
def test_every_shipped_option_passes(compose, group, option):
    cfg = compose([f"{group}={option}"])
    validate_groups(cfg)


def test_shipped_experiments_pass(compose):
    for experiment in _options("experiment"):
        # finetune starts from weights the user names (the path is not read here)
        weights = ["backbone.checkpoint_path=/any/weights.pth"] if experiment == "finetune" else []
        validate_groups(compose([f"experiment={experiment}", *weights]))


def test_nodes_fail_on_their_own_with_their_field_names(compose):
    """Each node checks itself when instantiated (validate_groups adds the group key)."""
    cfg = compose(["optimizer.lr=0"])
    # Hydra 1.4 raises the node's own error, with the node's key as a note
    with pytest.raises(ConfigValueError) as info:
        instantiate(cfg.optimizer)
    assert str(info.value) == "lr=0: must be > 0"
    with pytest.raises(ConfigValueError, match=r"^optimizer\.lr=0: must be > 0$"):
        validate_groups(cfg)


def test_any_timm_optimizer_name_is_accepted(compose):
    from autotimm import list_optimizers

    assert "nadamw" in list_optimizers(include_all=True)
    assert "nadamw" not in list_optimizers()
    assert set(list_optimizers()) <= set(list_optimizers(include_all=True))
    validate_groups(compose(["optimizer.name=nadamw"]))
    with pytest.raises(ConfigValueError, match="close matches: nadam, nadamw"):
        validate_groups(compose(["optimizer.name=nadamx"]))


def test_the_library_checks_each_concern_once(monkeypatch):
    """ImageClassifier(...) checks its arguments with the same functions, one call each."""
    import autotimm.model.backbone
    import autotimm.model.regularization
    import autotimm.optim.check
    from autotimm import ImageClassifier

    calls: dict[str, int] = {}

    def counting(module, name):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counting(autotimm.optim.check, "create_optimizer")  # the dry run's optimizer
    counting(autotimm.optim.check, "create_scheduler")  # the dry run's scheduler
    counting(autotimm.model.regularization, "validate_regularization")
    counting(autotimm.model.backbone, "validate_model_name")
    ImageClassifier("resnet18", num_classes=3, metrics=[], optimizer="sgd", scheduler="step")
    assert calls == {
        "create_optimizer": 1,
        "create_scheduler": 1,
        "validate_regularization": 1,
        "validate_model_name": 1,
    }


def test_error_format_and_prefixing():
    from autotimm.checks import under

    error = ConfigValueError("lr", -0.1, "must be > 0")
    assert str(error) == "lr=-0.1: must be > 0"
    assert isinstance(error, ValueError)
    with pytest.raises(ConfigValueError) as info, under("optimizer"):
        raise error
    assert str(info.value) == "optimizer.lr=-0.1: must be > 0"
    assert info.value.key == "optimizer.lr" and info.value.value == -0.1


def _count_builds(monkeypatch) -> dict[str, int]:
    """Count the dry-run builds of the optimizer and scheduler and the regularization check."""
    import autotimm.model.regularization
    import autotimm.optim.check

    calls: dict[str, int] = {}
    for module, name in (
        (autotimm.optim.check, "create_optimizer"),
        (autotimm.optim.check, "create_scheduler"),
        (autotimm.model.regularization, "validate_regularization"),
    ):
        original = getattr(module, name)

        def wrapper(*args, _name=name, _original=original, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)
    return calls


def test_a_run_checks_each_group_once_from_config_to_model(compose, monkeypatch):
    """validate_groups builds (and checks) each group once; the model node receives those
    built groups instead of building and checking them again."""
    from types import SimpleNamespace

    from autotimm.app.compose import build_model

    cfg = compose(["optimizer=sgd", "scheduler=onecycle", "regularization=light"])
    calls = _count_builds(monkeypatch)
    groups = validate_groups(cfg)
    data = SimpleNamespace(num_classes=10, class_names=None, multi_label=False)
    model = build_model(cfg, data, groups)
    assert calls == {"create_optimizer": 1, "create_scheduler": 1, "validate_regularization": 1}
    assert model.hparams.optimizer == "sgd" and model.hparams.lr == cfg.optimizer.lr
    assert model.hparams.scheduler == "onecycle"
    assert model.hparams.label_smoothing == cfg.regularization.label_smoothing == 0.1
    assert model.hparams.backbone["drop_path_rate"] == cfg.regularization.drop_path_rate


def test_the_model_node_passes_the_groups_not_their_fields():
    from omegaconf import OmegaConf

    model = OmegaConf.load(ROOT / "conf" / "config.yaml").model
    node = OmegaConf.to_container(model, resolve=False)
    for group in ("backbone", "metrics", "optimizer", "scheduler", "regularization"):
        assert node[group] == "${" + group + "}"
    interpolated = [v[2:-1] for v in node.values() if isinstance(v, str) and v.startswith("${")]
    groups = ("optimizer.", "scheduler.", "regularization.", "backbone.", "metrics.")
    assert [v for v in interpolated if v.startswith(groups)] == []


def test_the_library_takes_the_groups_types_and_keeps_the_keyword_form():
    """ImageClassifier takes OptimizerConfig, SchedulerConfig and RegularizationConfig; its
    hparams (what checkpoints keep) are the same as with the documented keywords."""
    from autotimm import ImageClassifier, OptimizerConfig, RegularizationConfig, SchedulerConfig

    by_keywords = ImageClassifier(
        "resnet18",
        3,
        [],
        optimizer="sgd",
        lr=0.05,
        optimizer_kwargs={"momentum": 0.9},
        scheduler="step",
        scheduler_kwargs={"step_size": 2},
        label_smoothing=0.1,
        mixup_alpha=0.2,
        layer_decay=0.8,
    )
    by_configs = ImageClassifier(
        "resnet18",
        3,
        [],
        optimizer=OptimizerConfig("sgd", lr=0.05, kwargs={"momentum": 0.9}, layer_decay=0.8),
        scheduler=SchedulerConfig("step", {"step_size": 2}),
        regularization=RegularizationConfig(label_smoothing=0.1, mixup_alpha=0.2),
    )
    assert dict(by_configs.hparams) == dict(by_keywords.hparams)
    assert "regularization" not in by_configs.hparams
    # the regularization's stochastic depth reaches a backbone that sets none
    stochastic_depth = RegularizationConfig(drop_path_rate=0.1)
    deep = ImageClassifier("resnet18", 3, [], regularization=stochastic_depth)
    assert deep.hparams.backbone["drop_path_rate"] == 0.1


# id -> (ImageClassifier keywords; "OPT", "SCHED", "REG": a config of that kind, the start
# of the one-line message)
LIBRARY_ERRORS = {
    "optimizer-twice": (
        {"optimizer": "OPT", "lr": 0.5},
        "lr=0.5: given twice: the OptimizerConfig passed as optimizer holds lr; set it there",
    ),
    "scheduler-twice": (
        {"scheduler": "SCHED", "scheduler_kwargs": {"gamma": 0.5}},
        "scheduler_kwargs={'gamma': 0.5}: given twice",
    ),
    "regularization-twice": (
        {"regularization": "REG", "label_smoothing": 0.2},
        "label_smoothing=0.2: given twice",
    ),
    "regularization-dict": (
        {"regularization": {"label_smoothing": 0.1}},
        "regularization={'label_smoothing': 0.1}: accepted: a RegularizationConfig",
    ),
    "pair": (
        {"optimizer": "adagrad", "scheduler": "onecycle"},
        "scheduler='onecycle': with the Adagrad optimizer",
    ),
    "optimizer-kwargs": ({"optimizer_kwargs": {"bogus": 1}}, "optimizer_kwargs={'bogus': 1}: "),
    "scheduler-name": (
        {"scheduler": "cosinus"},
        "scheduler='cosinus': unknown scheduler; close matches: cosine",
    ),
    "mixup-mode": (
        {"mixup_mode": "pairs"},
        "mixup_mode='pairs': unknown; accepted: ['batch', 'pair', 'elem']",
    ),
}


@pytest.mark.parametrize(("kwargs", "message"), LIBRARY_ERRORS.values(), ids=LIBRARY_ERRORS)
def test_library_errors_name_the_argument_as_given(kwargs, message):
    from autotimm import ImageClassifier, OptimizerConfig, RegularizationConfig, SchedulerConfig

    stand_ins = {
        "OPT": OptimizerConfig("sgd"),
        "SCHED": SchedulerConfig("step", {"step_size": 1}),
        "REG": RegularizationConfig(),
    }
    kwargs = {k: stand_ins.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(ConfigValueError) as info:
        ImageClassifier("resnet18", 3, [], **kwargs)
    assert str(info.value).startswith(message)
