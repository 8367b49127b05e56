"""How a sweep samples: a seed per trial, constant liar with parallel trials, warm starts.

- Seeds: each trial's values are drawn by a sampler seeded from (the configured seed, the
  study's name, the trial's number). Trial numbers come from the storage, one per trial,
  so two sweep processes started at the same moment on one study (two machines, two
  SLURM drivers) never draw the same values, a continued study never repeats earlier
  values, and a sweep stays reproducible.
- Constant liar: with several trials running at once, TPE is told about the ones still
  running (Optuna's `constant_liar`), so it does not propose near-duplicates of them.
  `constant_liar: null` in the sampler config means "on when trials run in parallel".
  Only TPE takes the option: GPSampler counts running trials itself (q-batch EI), and
  random, CMA-ES, QMC and NSGA-II/III are built as configured.
- QMC keeps the one sampler the study was built with: its points are the seeded sequence
  at the trial's index (kept in the study), which a new seed per trial would scatter.
- Warm starts: `sweep.enqueue` (known configurations) and `sweep.warm_start_from` (the
  top-k completed trials of another study) run first, through `Study.enqueue_trial`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

ATTR_ENQUEUED = "autotimm_enqueued"  # study user attribute: configurations already queued
TPE = "optuna.samplers.TPESampler"
NSGA2 = "optuna.samplers.NSGAIISampler"  # multi-objective sweeps
CMAES = "optuna.samplers.CmaEsSampler"  # needs the cmaes package
QMC = "optuna.samplers.QMCSampler"  # one seeded sequence for the whole study


def trial_seed(seed: int, study_name: str | None, number: int) -> int:
    """A 31-bit seed from the configured seed, the study and the trial number (stable)."""
    text = f"{int(seed)}/{study_name}/{int(number)}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "big") & 0x7FFFFFFF


def uses_constant_liar(sampler_config: DictConfig | None, n_jobs: int) -> bool | None:
    """The `constant_liar` a TPE sampler gets: as configured, or on with parallel trials."""
    if sampler_config is None or sampler_config.get("_target_") != TPE:
        return None  # not TPE: no such option
    configured = sampler_config.get("constant_liar")
    return bool(configured) if configured is not None else n_jobs > 1


def build_sampler(sampler_config: DictConfig, n_jobs: int, seed: int | None = None) -> Any:
    """The configured sampler, with the constant-liar decision and (optionally) a seed."""
    if sampler_config.get("_target_") == CMAES:
        _check_cmaes()
    overrides: dict[str, Any] = {}
    liar = uses_constant_liar(sampler_config, n_jobs)
    if liar is not None:
        overrides["constant_liar"] = liar
    if seed is not None:
        overrides["seed"] = seed
    with warnings.catch_warnings():  # constant_liar/multivariate are "experimental" in 2.x
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return instantiate(sampler_config, **overrides)


def sampler_for_trial(
    sampler_config: DictConfig | None, n_jobs: int, study_name: str | None, number: int
) -> Any | None:
    """The sampler that draws trial `number`'s values (None: keep the study's sampler)."""
    if sampler_config is None or sampler_config.get("seed") is None:
        return None  # unseeded samplers are random anyway
    if sampler_config.get("_target_") == QMC:
        return None  # the study's QMC sampler: one sequence, the trial's index in it
    seed = trial_seed(int(sampler_config.seed), study_name, number)
    return build_sampler(sampler_config, n_jobs, seed)


def _check_cmaes() -> None:
    """CmaEsSampler imports `cmaes` only at its first model-based trial: say so up front."""
    import importlib.util

    if importlib.util.find_spec("cmaes") is None:
        from autotimm.sweep.engine_checks import SweepSetupError  # one line, no traceback

        raise SweepSetupError(
            "hydra/sweeper/sampler=cmaes needs the cmaes package, which is not installed: "
            "pip install cmaes (or choose another hydra/sweeper/sampler)"
        )


def flat_params(configuration: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{optimizer: {lr: 1e-3}}` or `{optimizer.lr: 1e-3}` -> `{"optimizer.lr": 1e-3}`."""
    flat: dict[str, Any] = {}
    for key, value in configuration.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_params(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def enqueue(
    study: optuna.Study, configurations: Iterable[Mapping[str, Any]], space: Iterable[str]
) -> int:
    """Queue configurations to run first; ones queued by an earlier run are not repeated.

    Keys outside the search space are left out (with a warning); keys it lacks are sampled.
    Returns how many were queued now.
    """
    space = set(space)
    done = set(study.user_attrs.get(ATTR_ENQUEUED, []))
    queued = []
    for configuration in configurations:
        params = flat_params(_plain(configuration))
        unknown = sorted(set(params) - space)
        if unknown:
            log.warning("enqueue: %s not in the search space %s: left out", unknown, sorted(space))
        params = {k: v for k, v in params.items() if k in space}
        key = json.dumps(params, sort_keys=True, default=str)
        if not params or key in done:
            continue
        study.enqueue_trial(params)
        done.add(key)
        queued.append(params)
    if queued:
        study.set_user_attr(ATTR_ENQUEUED, sorted(done))
        log.info("Queued %d known configuration(s) to run first: %s", len(queued), queued)
    return len(queued)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def top_trials(source: optuna.Study, k: int) -> list[dict[str, Any]]:
    """The params of the k best completed trials of a single-objective study."""
    complete = source.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    reverse = source.direction == optuna.study.StudyDirection.MAXIMIZE
    ranked = sorted(complete, key=lambda t: t.value, reverse=reverse)
    return [dict(t.params) for t in ranked[: max(0, int(k))]]


def source_study(source: str, storage: Any) -> optuna.Study:
    """`sweep.warm_start_from`: a sweep directory (its study file) or a study on `storage`."""
    from pathlib import Path

    from autotimm.sweep.engine_checks import SweepSetupError  # one line, no traceback
    from autotimm.sweep.storage import STUDY_FILES, local_study, masked, open_storage

    folder = Path(str(source)).expanduser()
    if folder.is_dir():
        url = local_study(folder)
        if url is None:
            raise SweepSetupError(
                f"sweep.warm_start_from={source}: that folder has no study file "
                f"({' or '.join(STUDY_FILES)}); give a sweep directory "
                "(outputs/sweeps/<name>) or a study name on this sweep's storage"
            )
        opened = open_storage(url)
        names = [s.study_name for s in optuna.get_all_study_summaries(opened)]
        if len(names) != 1:
            raise SweepSetupError(
                f"sweep.warm_start_from={source}: {url} holds studies {names}; "
                "name one of them (sweep.warm_start_from=<study name>) with its storage"
            )
        return optuna.load_study(study_name=names[0], storage=opened)
    opened = open_storage(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(opened)] if storage else []
    if str(source) not in names:
        raise SweepSetupError(
            f"sweep.warm_start_from={source!r} is neither a sweep directory nor a study on "
            f"{masked(storage)}; studies there: {names}"
        )
    return optuna.load_study(study_name=str(source), storage=opened)


def warm_start(
    study: optuna.Study, sweep: Mapping[str, Any], storage: Any, space: Iterable[str]
) -> int:
    """Queue `sweep.enqueue` and the top-k trials of `sweep.warm_start_from` to run first."""
    space = list(space)
    configurations = list(sweep.get("enqueue") or [])
    source = sweep.get("warm_start_from")
    if source:
        earlier = source_study(str(source), storage)
        best = top_trials(earlier, int(sweep.get("warm_start_top_k") or 5))
        log.info("Warm start from study %s: its %d best trial(s)", earlier.study_name, len(best))
        configurations += best
    return enqueue(study, configurations, space) if configurations else 0
