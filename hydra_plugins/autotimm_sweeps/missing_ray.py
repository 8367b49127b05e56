"""`hydra/launcher=ray_gpu` without Ray: one short message naming the extra to install.

conf/hydra/launcher/ray_gpu.yaml extends hydra-ray-launcher's `ray` config. Where that
plugin is not installed, Hydra would stop at composition with "Could not find
'hydra/launcher/ray'"; this module (imported at Hydra's plugin discovery) stores a `ray`
launcher config of the same keys in its place, whose launcher says what to install when
the sweep sets it up (shown by autotimm.sweep.engine_checks' error, without a traceback).
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher

RAY_PLUGIN = "hydra_plugins.hydra_ray_launcher"


class MissingRayLauncher(Launcher):
    """Stands in for hydra-ray-launcher's RayLauncher when it is not installed."""

    def __init__(self, **keys: Any) -> None:
        self.keys = keys

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        from autotimm.sweep.engine_checks import SweepSetupError

        raise SweepSetupError(
            "hydra/launcher=ray_gpu runs trials as Ray tasks, but Ray and hydra-ray-launcher "
            "are not installed here; install the optional extra: pip install 'autotimm[ray]' "
            "(or choose another launcher: hydra/launcher=joblib|slurm_gpu)"
        )

    def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:
        raise NotImplementedError  # setup() always raises


if find_spec(RAY_PLUGIN) is None:
    ConfigStore.instance().store(
        group="hydra/launcher",
        name="ray",
        node={
            "_target_": f"{__name__}.MissingRayLauncher",
            "ray": {"init": {"address": None}, "remote": {}},
        },
        provider="autotimm",
        replace=True,  # Hydra's plugin scan imports this module a second time
    )
