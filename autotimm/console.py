"""Rich console output: the composed config as a tree, and short user-error messages."""

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


def print_user_error(error: BaseException) -> None:
    """One short, readable line (plus the cause) instead of a traceback."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True)
    # soft_wrap: paths in the message stay whole (copyable)
    message = escape(str(error))  # messages contain [lists] that are not rich markup
    console.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)
    console.print("(set HYDRA_FULL_ERROR=1 for the full traceback)", style="dim")
