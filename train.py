"""Train a timm image classifier with Hydra configs.

python train.py                                   # resnet18 on digits
python train.py backbone=vit_b16 optimizer=lamb
python train.py -m +sweeps=lr_mixup_ls            # Optuna sweep
python train.py --help                            # groups and options
"""

from autotimm.startup import defer_collections

if __name__ == "__main__":  # not in spawned children (DataLoader workers, ddp_spawn)
    defer_collections()  # before the imports: ~500,000 objects (autotimm/startup.py)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from autotimm.app.resolvers import register_resolvers  # noqa: E402
from autotimm.utils import trusted_targets  # noqa: E402

register_resolvers()  # before Hydra composes: run dirs and paths use them


# execution_whitelist: the `_target_`s a config may call (autotimm.utils.TRUSTED_TARGETS)
@hydra.main(
    version_base="1.3",
    config_path="conf",
    config_name="config",
    execution_whitelist=trusted_targets(),
)
def main(cfg: DictConfig) -> float | None:
    from autotimm.app.run import main as run  # imported here so --help stays fast

    return run(cfg)


if __name__ == "__main__":
    main()
