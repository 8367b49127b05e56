"""Rich console output: the composed config as a tree."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

# groups first, in the order users think about a run
_ORDER = ("data", "backbone", "model", "optimizer", "scheduler", "regularization", "trainer")


def print_config_tree(cfg: DictConfig, resolve: bool = True) -> None:
    """Print the composed config as a rich tree (one branch per top-level key)."""
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("config", style="bold")
    keys = [k for k in _ORDER if k in cfg] + [k for k in cfg if k not in _ORDER]
    for key in keys:
        branch = tree.add(str(key), style="bold cyan")
        value = cfg[key]
        if isinstance(value, DictConfig):
            text = OmegaConf.to_yaml(value, resolve=resolve)
        else:
            text = str(value)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark"))
    rich.print(tree)
