"""`MODEL_CARD.md`: a short description of a trained run, from its run record and checkpoint.

Data source and classes, backbone and training recipe (the command line's overrides and
the resolved values), the best validation and the test metrics, the model's cost, and the
exact commands to predict with it and export it. `write_model_card(run_dir)` writes one
run's card; `copy_best_card(sweep_dir)` puts the best trial's card into the sweep folder.
`python -m autotimm.inference.model_card DIR` does either for an existing folder.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from autotimm.records.results import RESULTS_FILE, RunRecord, read_record

log = logging.getLogger(__name__)

CARD_FILE = "MODEL_CARD.md"
MAX_CLASSES_LISTED = 50
# the recipe values the card names, from the ImageClassifier's and datamodule's hparams
MODEL_KEYS = ("optimizer", "lr", "weight_decay", "scheduler", "label_smoothing", "mixup_alpha",
              "cutmix_alpha", "head_dropout", "freeze_backbone")  # fmt: skip
DATA_KEYS = ("batch_size", "hflip", "vflip", "scale", "ratio", "color_jitter", "auto_augment",
             "re_prob", "no_aug", "limit")  # fmt: skip


def _checkpoint_parts(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(model hparams, datamodule hparams, datamodule state) of the run's best checkpoint."""
    from autotimm.inference.checkpoint import data_state, read_checkpoint, run_checkpoint

    try:
        checkpoint = read_checkpoint(run_checkpoint(run_dir))
    except (ValueError, OSError) as exc:  # no checkpoint kept: the card says less
        log.warning("model card without checkpoint details: %s", exc)
        return {}, {}, {}
    data_hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    return dict(checkpoint["hyper_parameters"]), data_hparams, data_state(checkpoint)


def _metrics_table(values: dict[str, Any]) -> list[str]:
    if not values:
        return ["(none recorded)"]
    rows = ["| metric | value |", "|---|---|"]
    for name, value in values.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        rows.append(f"| {name} | {shown} |")
    return rows


def _data_section(data: dict[str, Any], state: dict[str, Any], record: RunRecord) -> list[str]:
    names = [str(n) for n in state.get("class_names") or []]
    listed = ", ".join(names[:MAX_CLASSES_LISTED]) + (
        " ..." if len(names) > MAX_CLASSES_LISTED else ""
    )
    config = state.get("data_config") or {}
    lines = ["## Data", ""]
    lines.append(
        f"- source: `{data.get('source', '?')}`"
        + (f", root `{data['root']}`" if data.get("root") else "")
    )
    kind = "labels" if data.get("multi_label") else "classes"
    lines.append(f"- {kind} ({len(names) or record.num_classes}): {listed or '(not recorded)'}")
    if data.get("multi_label"):
        lines.append("- task: multi-label (several labels per image, one sigmoid per label)")
    if config:
        lines.append(
            f"- input: {tuple(config['input_size'])}, {config['interpolation']} resize, "
            f"crop_pct {config['crop_pct']}, mean {tuple(round(v, 4) for v in config['mean'])}, "
            f"std {tuple(round(v, 4) for v in config['std'])}"
        )
    return lines


def _recipe_section(model: dict[str, Any], data: dict[str, Any], record: RunRecord) -> list[str]:
    backbone = model.get("backbone") or {}
    lines = ["## Backbone and recipe", ""]
    if backbone:
        start = "from pretrained weights" if backbone.get("pretrained") else "from scratch"
        lines.append(f"- backbone: `{backbone.get('model_name')}` (timm), trained {start}")
    recipe = {k: model[k] for k in MODEL_KEYS if k in model}
    if model.get("multi_label"):
        recipe["label_threshold"] = model.get("label_threshold", 0.5)
    recipe.update({f"data.{k}": data[k] for k in DATA_KEYS if data.get(k) is not None})
    lines += [f"- {key}: `{value}`" for key, value in recipe.items()]
    lines.append(
        f"- trained {record.epochs} epoch(s), {record.global_step} steps, best epoch "
        f"{record.best_epoch}, {record.wall_time_s} s on {record.device}"
    )
    lines += ["", "Overrides of the run (`python train.py ...`):", "", "```"]
    lines += [str(o) for o in record.overrides] or ["(defaults)"]
    return lines + ["```"]


def _cost_section(record: RunRecord) -> list[str]:
    cost = record.model
    if cost is None:
        return ["## Cost", "", "(not measured: measure_cost=false)"]
    return [
        "## Cost",
        "",
        f"- parameters: {cost.params_m} M, {cost.gflops} GFLOPs per image",
        f"- latency (batch 1): {cost.latency_ms} ms, throughput {cost.throughput_img_s} "
        f"images/s, on {record.device}",
    ]


def _usage_section(run_dir: Path) -> list[str]:
    where = shlex.quote(str(run_dir))
    return [
        "## Use it",
        "",
        "```bash",
        f"python -m autotimm.predict {where} IMAGES_OR_FOLDERS... --out predictions.csv",
        f"python -m autotimm.predict {where} IMAGES_OR_FOLDERS... --tta",
        f"python -m autotimm.export {where} --format onnx",
        f"python -m autotimm.export {where} --format torchscript",
        f"python -m autotimm.export {where} --format timm",
        "```",
        "",
        "The timm folder loads without autotimm: "
        f'`timm.create_model("local-dir:{run_dir}/export/timm_model", pretrained=True)`.',
    ]


def card_text(run_dir: Path, record: RunRecord) -> str:
    """The card's markdown for a run and its record."""
    model, data, state = _checkpoint_parts(run_dir)
    backbone = (model.get("backbone") or {}).get("model_name", "model")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Model card: {backbone} on {data.get('source', 'its data')}", ""]
    lines += [f"Run `{run_dir}` ({record.status}), card written {when}.", ""]
    lines += _data_section(data, state, record) + [""]
    lines += _recipe_section(model, data, record) + [""]
    objective = f"{record.objective.name} ({record.objective.mode})"
    lines += ["## Results", "", f"Objective: {objective} = {record.objective.value}", ""]
    lines += ["Best validation epoch:", ""] + _metrics_table(record.val) + [""]
    lines += ["Test (best checkpoint):", ""] + _metrics_table(record.test) + [""]
    lines += _cost_section(record) + [""] + _usage_section(run_dir)
    return "\n".join(lines) + "\n"


def write_model_card(run_dir: str | Path) -> Path:
    """Write `<run_dir>/MODEL_CARD.md` from its results.json and best checkpoint."""
    run_dir = Path(run_dir).resolve()
    record = read_record(run_dir)
    if record is None:
        raise FileNotFoundError(f"{run_dir} has no {RESULTS_FILE}: not a finished run")
    path = run_dir / CARD_FILE
    path.write_text(card_text(run_dir, record))
    return path


def write_model_card_quietly(run_dir: str | Path) -> Path | None:
    """`write_model_card` at the end of a run: a failure is logged, never fails the run."""
    try:
        return write_model_card(run_dir)
    except Exception as exc:  # the card is a convenience; the run's results stand
        log.warning("no %s for %s: %s: %s", CARD_FILE, run_dir, type(exc).__name__, exc)
        return None


def copy_best_card(sweep_dir: str | Path) -> Path | None:
    """The best trial's card (written if missing) copied to `<sweep_dir>/MODEL_CARD.md`.

    None when no trial completed or the sweep has a Pareto front instead of one best
    (logged); it never raises, so the end of a sweep cannot fail on it."""
    from autotimm.inference.checkpoint import best_run_of_sweep

    sweep_dir = Path(sweep_dir).resolve()
    try:
        best = best_run_of_sweep(sweep_dir)
        if best is None:
            return None
        card = best / CARD_FILE
        if not card.is_file():
            write_model_card(best)
        target = sweep_dir / CARD_FILE
        shutil.copyfile(card, target)
        return target
    except Exception as exc:  # the card is a convenience; the sweep's results stand
        log.warning("no %s for sweep %s: %s: %s", CARD_FILE, sweep_dir, type(exc).__name__, exc)
        return None


def main(argv: list[str] | None = None) -> int:
    """`python -m autotimm.inference.model_card DIR`: a run's card, or a sweep's best."""
    from autotimm.records.results import has_record
    from autotimm.user_errors import user_errors_reported

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m autotimm.inference.model_card RUN_OR_SWEEP_DIR", file=sys.stderr)
        return 2
    with user_errors_reported(exit_process=False) as ok:
        folder = Path(args[0])
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a run or sweep folder")
        path = write_model_card(folder) if has_record(folder) else copy_best_card(folder)
        print(f"wrote {path}" if path else f"no completed run below {folder}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
