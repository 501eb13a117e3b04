"""The bench scripts (bench/*.py) stay runnable: a rename in src/ fails here, in seconds, instead of in a benchmark
an hour into its run. Each script imports as a module without doing its work, every handsigns name it imports
(inside functions too, and in code it hands to a subprocess) exists, and its command line answers --help."""

from __future__ import annotations

import ast
import contextlib
import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py"))
SHARED = {"common", "notes_loop"}  # modules the scripts import, with no command line of their own


@pytest.fixture
def bench(monkeypatch):
    """Imports bench/NAME as `python bench/x.py` would find it (bench/ first on sys.path). Its modules are
    forgotten afterwards, and sys.path restored: their names (common, resume, speed) are too generic to leave."""
    monkeypatch.syspath_prepend(str(BENCH))
    yield importlib.import_module
    for name in SCRIPTS:
        sys.modules.pop(name, None)


def test_the_scripts_are_found():
    assert {"common", "speed", "generality", "seeds"} <= set(SCRIPTS)


def is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ('__name__ == "__main__"', "__name__ == '__main__'")


def is_declaration(node: ast.stmt) -> bool:
    """An import, a definition, a constant, the docstring or a sys.path entry: what a module may run on import."""
    if isinstance(node, ast.Expr):
        return isinstance(node.value, ast.Constant) or ast.unparse(node.value).startswith("sys.path.insert(")
    declarations = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)
    return isinstance(node, declarations)


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_imports_without_doing_its_work(name, bench, capsys):
    tree = ast.parse((BENCH / f"{name}.py").read_text(encoding="utf-8"))
    work = [f"line {n.lineno}" for n in tree.body if not (is_declaration(n) or is_main_guard(n))]
    assert work == [], f"bench/{name}.py runs code on import: put it in main(), behind the __main__ guard"
    bench(name)
    assert capsys.readouterr().out == ""
    if name not in SHARED:
        assert any(is_main_guard(n) for n in tree.body), f"bench/{name}.py has no `if __name__ == '__main__':`"


def handsigns_imports(tree: ast.AST) -> set[tuple[str, str | None]]:
    """(module, name) for each ``from handsigns... import name`` in ``tree``, (module, None) for ``import``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "handsigns":
            found |= {(node.module, a.name) for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {(a.name, None) for a in node.names if a.name.split(".")[0] == "handsigns"}
    return found


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_handsigns_name_a_script_imports_exists(name, bench):
    """Imports inside functions run only when the benchmark gets there; code in a string runs in a subprocess
    (bench/scaling.py's epoch). Both are checked here, statically."""
    module = bench(name)
    trees = [ast.parse((BENCH / f"{name}.py").read_text(encoding="utf-8"))]
    for value in vars(module).values():
        if isinstance(value, str) and "handsigns" in value:
            with contextlib.suppress(SyntaxError):  # prose (a docstring), not code
                trees.append(ast.parse(value))
    missing = []
    for tree in trees:
        for module_name, attr in sorted(handsigns_imports(tree), key=str):
            try:
                found = importlib.import_module(module_name)
                if attr is not None and not hasattr(found, attr):
                    importlib.import_module(f"{module_name}.{attr}")  # a submodule not imported yet
            except ImportError:
                missing.append(f"{module_name}.{attr}" if attr else module_name)
    assert missing == [], f"bench/{name}.py imports what src/ no longer has"


@pytest.mark.parametrize("name", sorted(set(SCRIPTS) - SHARED))
def test_a_script_answers_help(name, bench, monkeypatch, capsys):
    """Parses its command line before any work, and its help text formats (argparse fails on a stray %)."""
    monkeypatch.setattr(sys, "argv", [f"bench/{name}.py", "--help"])
    with pytest.raises(SystemExit) as done:
        bench(name).main()
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {name}.py")
