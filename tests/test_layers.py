"""The package's layers (README, "Architecture"): each imports only the layers below it, and
no module imports itself back through others. Read from the source with `ast`, so lazy
imports inside functions count too (only `if TYPE_CHECKING:` blocks are left out)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

# lowest first; a module may import its own layer and the layers before it
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "helpers",
        (
            "autotimm.checks",
            "autotimm.utils",
            "autotimm.user_errors",
            "autotimm.startup",
            "autotimm.private_apis",
        ),
    ),
    ("records", ("autotimm.records",)),
    ("data", ("autotimm.data",)),
    ("metrics", ("autotimm.metrics",)),
    ("optim", ("autotimm.optim",)),
    ("training", ("autotimm.training",)),
    ("model", ("autotimm.model",)),
    ("inference", ("autotimm.inference",)),
    ("sweep", ("autotimm.sweep",)),
    ("compare", ("autotimm.compare",)),
    ("app", ("autotimm.app",)),
    # the package face (lazy re-exports) and the commands
    ("entry points", ("autotimm", "autotimm.predict", "autotimm.export", "train", "hydra_plugins")),
]
LIBRARY = ("records", "data", "metrics", "optim", "training", "model")
ABOVE_LIBRARY = ("autotimm.app", "autotimm.sweep", "autotimm.compare", "autotimm.inference")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    paths = [*ROOT.glob("autotimm/**/*.py"), *ROOT.glob("hydra_plugins/**/*.py"), ROOT / "train.py"]
    return {module_name(p): p for p in paths}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (`from pkg import submodule` names the submodule)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    modules = sources()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS and the README's map"
    return rank


def test_every_module_imports_only_its_own_layer_and_those_below():
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
        for m, targets in graph().items()
        for t in sorted(targets)
        if layer_of(t) > layer_of(m)
    ]
    assert upward == []


def test_library_layers_never_import_app_sweep_compare_or_inference():
    for module, targets in graph().items():
        if LAYERS[layer_of(module)][0] in LIBRARY + ("helpers",):
            bad = [t for t in targets if t.startswith(ABOVE_LIBRARY)]
            assert bad == [], f"{module} imports {bad}"


def test_only_entry_points_import_the_app():
    for module, targets in graph().items():
        if any(t.startswith("autotimm.app") for t in targets) and not module.startswith(
            "autotimm.app"
        ):
            assert LAYERS[layer_of(module)][0] == "entry points", module


def test_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert circles == []


def test_the_checker_sees_an_upward_import(tmp_path):
    """The graph reader itself: a lazy import in a function, a relative import, a
    `from package import module` and a TYPE_CHECKING import are read as they should be."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from autotimm.app import run\n"
        "def f():\n    from autotimm.sweep import devices\n"
        "from . import heads\n"
    )
    known = {"autotimm.app.run", "autotimm.sweep.devices", "autotimm.model.heads", "autotimm.sweep"}
    found = imports_of("autotimm.model.classifier", source, known)
    assert found == {"autotimm.sweep", "autotimm.sweep.devices", "autotimm.model.heads"}
    assert layer_of("autotimm.sweep.devices") > layer_of("autotimm.model.heads")


PUBLIC_PATHS = [
    ("autotimm", "ImageClassifier"),
    ("autotimm", "MetricConfig"),
    ("autotimm", "MetricManager"),
    ("autotimm", "BackboneConfig"),
    ("autotimm", "LoggingConfig"),
    ("autotimm", "ClassificationHead"),
    ("autotimm", "OptimizerConfig"),
    ("autotimm", "SchedulerConfig"),
    ("autotimm", "RegularizationConfig"),
    ("autotimm", "list_backbones"),
    ("autotimm", "list_optimizers"),
    ("autotimm", "list_schedulers"),
    ("autotimm.metrics", "MetricConfig"),
    ("autotimm.metrics", "MetricManager"),
    ("autotimm.data", "ImageDataModule"),
    ("autotimm.data", "list_sources"),
    ("autotimm.optim", "OptimizerConfig"),
    ("autotimm.compare", "compare"),
    ("autotimm.predict", "main"),
    ("autotimm.export", "main"),
]


def test_public_import_paths_keep_working():
    """The paths users and the README rely on, whatever folder their code moved to."""
    import importlib

    missing = [
        f"{module}.{name}"
        for module, name in PUBLIC_PATHS
        if not hasattr(importlib.import_module(module), name)
    ]
    assert missing == []
    for command in ("predict", "export", "compare"):
        assert importlib.util.find_spec(f"autotimm.{command}") is not None
    assert importlib.util.find_spec("autotimm.compare.__main__") is not None
