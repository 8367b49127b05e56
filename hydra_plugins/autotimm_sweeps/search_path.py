"""Put the checkout's top-level `sweeps/` folder on Hydra's search path, from any cwd.

`python /path/to/train.py -m +sweeps=lr_mixup_ls` then finds `sweeps/lr_mixup_ls.yaml`
wherever the command runs. The folder is mounted through its own config source that
shows only the `sweeps` group: putting the whole checkout on the search path would make
`--help` walk `.venv/` and `outputs/` looking for config groups.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult
from hydra.plugins.search_path_plugin import SearchPathPlugin

# light: the adapter imports Hydra's file config source, nothing of optuna
from autotimm.sweep.plugin_api import file_config_source_class

GROUP = "sweeps"
# <checkout>/hydra_plugins/autotimm_sweeps/search_path.py -> <checkout>
CHECKOUT = Path(__file__).resolve().parents[2]


class SweepsConfigSource(file_config_source_class()):  # type: ignore[misc]
    """A folder whose only config group is `sweeps` (the rest of the folder stays hidden)."""

    @staticmethod
    def scheme() -> str:
        return "autotimm-sweeps"

    @staticmethod
    def _inside(config_path: str) -> bool:
        return config_path.strip("/").split("/")[0] == GROUP

    def load_config(self, config_path: str) -> ConfigResult:
        if not self._inside(config_path):
            raise ConfigLoadError(f"Config not found : {config_path}")
        return super().load_config(config_path)

    def is_group(self, config_path: str) -> bool:
        if config_path.strip("/") == "":
            return super().is_group(GROUP)
        return self._inside(config_path) and super().is_group(config_path)

    def is_config(self, config_path: str) -> bool:
        return self._inside(config_path) and super().is_config(config_path)

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        if config_path.strip("/") == "":
            wanted = results_filter in (None, ObjectType.GROUP)
            return [GROUP] if wanted and super().is_group(GROUP) else []
        if not self._inside(config_path):
            return []
        # _base.yaml and friends are shared building blocks, not sweeps to pick
        return [x for x in super().list(config_path, results_filter) if not x.startswith("_")]


class SweepsSearchPathPlugin(SearchPathPlugin):
    """Adds `<checkout>/sweeps` (as group `sweeps`) to every composition."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if (CHECKOUT / GROUP).is_dir():
            search_path.append(
                provider="autotimm-sweeps",
                path=f"{SweepsConfigSource.scheme()}://{CHECKOUT}",
            )
