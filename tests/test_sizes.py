"""Size limits of the source, and the one spelling of the run record's file name.

No function or method (nested ones included) over MAX_FUNCTION_LINES lines and no file over
MAX_FILE_LINES lines in autotimm/, hydra_plugins/ and train.py; the string "results.json" in
code only in autotimm/records/results.py (docstrings and comments may name the file in
prose). Read with `ast`, nothing imported: the check costs well under a second.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400
RECORD_MODULE = "autotimm/records/results.py"
# the file name in code; "results.jsonl" (the benchmarks' JSON lines) is another file
RECORD_FILE = re.compile(r"results\.json(?!l)")


def source_files(root: Path) -> list[Path]:
    """The files the limits hold for."""
    files = [*root.glob("autotimm/**/*.py"), *root.glob("hydra_plugins/**/*.py")]
    if (root / "train.py").is_file():
        files.append(root / "train.py")
    return sorted(files)


def function_sizes(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int, int]]:
    """(qualified name, first line, lines) of every function below `tree`, nested ones too."""
    for node in ast.iter_child_nodes(tree):
        name = prefix
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}."
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # decorators are not counted: the span is `def` to the body's last line
            yield name[:-1], node.lineno, (node.end_lineno or node.lineno) - node.lineno + 1
        yield from function_sizes(node, name)


def size_offences(path: Path, root: Path) -> list[str]:
    """One message per function or file of `path` over its limit, naming it and its size."""
    text = path.read_text()
    where = path.relative_to(root).as_posix()
    found = [
        f"{where}:{line} {name} is {size} lines (limit {MAX_FUNCTION_LINES})"
        for name, line, size in function_sizes(ast.parse(text))
        if size > MAX_FUNCTION_LINES
    ]
    lines = len(text.splitlines())
    if lines > MAX_FILE_LINES:
        found.append(f"{where} is {lines} lines (limit {MAX_FILE_LINES})")
    return found


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of the module, its classes and functions."""
    owners = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None) if isinstance(node, owners) else None
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            found.add(id(body[0].value))
    return found


def record_file_spellings(path: Path) -> list[int]:
    """Lines of `path` whose code (a string, f-string parts included) spells results.json."""
    tree = ast.parse(path.read_text())
    prose = _docstrings(tree)
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in prose
        and RECORD_FILE.search(node.value)
    )


def test_no_function_or_file_over_its_limit():
    offences = [o for path in source_files(ROOT) for o in size_offences(path, ROOT)]
    assert not offences, "over the size limits (split by job):\n" + "\n".join(offences)


def test_only_the_record_module_spells_the_file_name():
    offenders = [
        f"{path.relative_to(ROOT).as_posix()}:{line}"
        for path in source_files(ROOT)
        if path.relative_to(ROOT).as_posix() != RECORD_MODULE
        for line in record_file_spellings(path)
    ]
    assert not offenders, (
        f"results.json spelled outside {RECORD_MODULE} (use its RESULTS_FILE or "
        f"record_path): {offenders}"
    )


def test_the_checks_find_offenders(tmp_path):
    # the checks above pass on the project; here each is shown to fail where it should
    # a method one line over the limit (`def` + 60 lines), and one at it
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    short = "".join(f"        y{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))
    module = tmp_path / "autotimm" / "big.py"
    module.parent.mkdir()
    module.write_text(
        f'"""Names results.json in prose."""\n\n\nclass Big:\n    def long(self):\n{body}'
        f"    def fits(self):\n{short}\n\n"
        + "# filler\n" * MAX_FILE_LINES
        + 'NAME = "results.json"\nLINES = "results.jsonl"\n'
        + 'def f(d):\n    """Reads d/results.json."""\n    return f"{d}/results.json"\n'
    )
    assert source_files(tmp_path) == [module]
    lines = len(module.read_text().splitlines())
    assert size_offences(module, tmp_path) == [
        f"autotimm/big.py:5 Big.long is {MAX_FUNCTION_LINES + 1} lines "
        f"(limit {MAX_FUNCTION_LINES})",
        f"autotimm/big.py is {lines} lines (limit {MAX_FILE_LINES})",
    ]
    assert record_file_spellings(module) == [lines - 4, lines]


def test_nested_functions_count_on_their_own():
    source = "def outer():\n    def inner():\n        return 1\n    return inner\n"
    assert list(function_sizes(ast.parse(source))) == [("outer", 1, 4), ("outer.inner", 2, 2)]
