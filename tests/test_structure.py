"""The project's structure, kept true: dvc.yaml's code deps, output paths, the module map and params defaults.

Static reads only (the imports of every file, dvc.yaml, docs, params.yaml): fast, no pipeline run.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from handsigns import paths
from handsigns.params import load
from handsigns.params.ci import CIParams
from handsigns.params.data import DataParams
from handsigns.params.recipe import RecipeParams

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = SRC / "handsigns"
STAGES = ("download", "split", "train", "evaluate", "export")


def module_file(name: str) -> Path | None:
    """The source file of dotted module ``name`` (``handsigns.params`` -> its ``__init__.py``)."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def handsigns_imports(path: Path) -> frozenset[str]:
    """The ``handsigns`` modules ``path`` imports anywhere in it (function-level imports count: they run)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from handsigns import checkpoint` imports a module; `from handsigns import __version__` a name
            names = [
                f"{node.module}.{a.name}" if module_file(f"{node.module}.{a.name}") else node.module for a in node.names
            ]
        else:
            continue
        found.update(n for n in names if n == "handsigns" or n.startswith("handsigns."))
    return frozenset(found)


def closure(path: Path) -> set[Path]:
    """Every handsigns source file that importing ``path`` runs: imported modules, their imports, and the
    ``__init__.py`` of each package on the way."""
    seen: set[Path] = set()
    todo = [path]
    while todo:
        current = todo.pop()
        for name in handsigns_imports(current):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
                file = module_file(".".join(parts[:i]))
                assert file is not None, f"{current.relative_to(REPO)} imports {name}, which does not exist"
                if file not in seen:
                    seen.add(file)
                    todo.append(file)
    return seen


def dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", STAGES)
def test_stage_code_deps_are_the_scripts_import_closure(stage):
    """A src/ file a stage runs but dvc.yaml does not list would let DVC reuse a stale output after it changed;
    one it lists but does not run re-runs the stage for nothing."""
    spec = dvc_stages()[stage]
    script = REPO / "stages" / f"{stage}.py"
    assert spec["cmd"] == f"python stages/{stage}.py"
    declared = {d for d in spec["deps"] if d.startswith(("src/", "stages/"))}
    expected = {f"stages/{stage}.py"} | {p.relative_to(REPO).as_posix() for p in closure(script)}
    assert declared == expected, (
        f"dvc.yaml stage {stage}: add {sorted(expected - declared)}, remove {sorted(declared - expected)}"
    )


# Files a stage must never run: a download setting must not re-run the model half, a training knob the data
# half, and editing the archive-bomb guards must not re-train.
NEVER_RUN = {
    "download": {"params/recipe.py", "params/memory.py"},
    "split": {"params/recipe.py", "params/memory.py", "fetch.py", "extract.py"},
    "train": {"params/data.py", "download.py", "extract.py", "split.py"},
    "evaluate": {"params/data.py", "fetch.py", "extract.py", "split.py"},
    "export": {"params/data.py", "fetch.py", "extract.py", "split.py"},
}


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_runs_only_the_params_sections_and_halves_it_reads(stage):
    ran = {p.relative_to(PACKAGE).as_posix() for p in closure(REPO / "stages" / f"{stage}.py")}
    assert not ran & NEVER_RUN[stage], f"stage {stage} runs {sorted(ran & NEVER_RUN[stage])}"


def path_constants() -> dict[str, Path]:
    return {name: value for name, value in vars(paths).items() if isinstance(value, Path)}


def test_dvc_yaml_outputs_are_the_paths_module():
    """Every output dvc.yaml declares is named in handsigns.paths, which the stages, gate and compare use."""
    named = {p.as_posix() for p in path_constants().values()}
    outs = {next(iter(o)) if isinstance(o, dict) else o for spec in dvc_stages().values() for o in spec["outs"]}
    assert outs - named == set(), "outputs in dvc.yaml that handsigns.paths does not name"
    metrics = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["metrics"])
    assert metrics == {p.as_posix() for p in (*paths.QUALITY_METRICS, paths.RUNTIME)}
    uncached = {
        path
        for spec in dvc_stages().values()
        for o in spec["outs"]
        if isinstance(o, dict)
        for path, opts in o.items()
        if opts.get("cache") is False
    }
    assert uncached == set(paths.posix(paths.COMMITTED_OUTPUTS))


def test_no_output_path_is_spelled_outside_paths():
    """Library code and stage scripts name outputs through handsigns.paths, never as string literals."""
    spelled = {p.as_posix() for p in path_constants().values() if p.parts[0] in ("data", "models", "metrics")}
    offenders = []
    for file in [*PACKAGE.rglob("*.py"), *(REPO / "stages").glob("*.py")]:
        if file.name == "paths.py":
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in spelled:
                offenders.append(f"{file.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert offenders == []


# ----------------------------------------------------------------------------------------- the module map


def modules() -> dict[str, Path]:
    """``train`` -> src/handsigns/train.py, ``params.data`` -> ..., ``params`` -> params/__init__.py."""
    found = {}
    for file in sorted(PACKAGE.rglob("*.py")):
        rel = file.relative_to(PACKAGE).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        found[".".join(parts) or "handsigns"] = file
    return found


def import_graph() -> dict[str, set[str]]:
    return {name: {m.removeprefix("handsigns.") for m in handsigns_imports(file)} for name, file in modules().items()}


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """A module's floor: 0 when it imports no handsigns module, else one above the highest it imports.
    Raises RecursionError on an import cycle."""
    memo: dict[str, int] = {}

    def floor(name: str) -> int:
        if name not in memo:
            memo[name] = 1 + max((floor(m) for m in graph[name]), default=-1)
        return memo[name]

    return {name: floor(name) for name in graph}


def documented_graph() -> dict[str, tuple[int, set[str]]]:
    text = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"```text\nfloor +module +imports\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no ```text block headed 'floor  module  imports'"
    rows = {}
    for line in block.group(1).splitlines():
        floor, name, imports = line.split(maxsplit=2)
        rows[name] = (int(floor), set() if imports.strip() == "-" else {m.strip() for m in imports.split(",")})
    return rows


def test_architecture_doc_is_the_real_import_graph():
    graph = import_graph()
    expected = {name: (floor, graph[name]) for name, floor in floors(graph).items()}
    assert documented_graph() == expected


def test_layers_only_look_down():
    """The torch-free floor stays torch-free: predict (and what it imports) never pulls in the pipeline."""
    graph = import_graph()
    reachable, todo = set(), ["predict"]
    while todo:
        for m in graph[todo.pop()] - reachable:
            reachable.add(m)
            todo.append(m)
    # paths: constants; files: the standard library; calibration, saliency: NumPy and Pillow
    assert reachable <= {"calibration", "errors", "files", "imaging", "paths", "saliency"}


def test_architecture_rooms_name_every_module_and_readme_every_stage():
    rooms = (REPO / "docs" / "architecture.md").read_text()
    missing = [
        f"{name.replace('.', '/')}.py"
        for name in modules()
        if name not in ("handsigns", "params") and f"{name.replace('.', '/')}.py" not in rooms
    ]
    readme = (REPO / "README.md").read_text()
    missing += [f"stages/{s}.py" for s in STAGES if f"stages/{s}.py" not in readme]
    assert missing == []


# ------------------------------------------------------------------------------------------------ params


@pytest.mark.parametrize("cls", [DataParams, RecipeParams, CIParams])
def test_params_yaml_values_are_the_defaults(cls):
    """A key left out of params.yaml takes the dataclass default: the two must agree, or deleting a line
    would silently change the recipe (data.source/sha256 name the shipped zip and have no default)."""
    shipped = dataclasses.asdict(load(cls, REPO / "params.yaml"))
    fields = dataclasses.fields(cls)
    defaults = {
        f.name: dataclasses.asdict(f.default) if dataclasses.is_dataclass(f.default) else f.default for f in fields
    }
    if cls is DataParams:
        shipped.pop("source"), shipped.pop("sha256"), defaults.pop("source"), defaults.pop("sha256")
    assert shipped == defaults


def test_git_tracks_no_weights_and_no_large_file_but_the_shipped_zip():
    """DVC outputs (models, data) stay out of git; the one large file in git is the default data set."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=False)
    files = [f for f in tracked.stdout.split("\0") if f]
    if tracked.returncode or not files:
        pytest.skip("not a git checkout")
    weights = [f for f in files if f.endswith((".pt", ".pth", ".onnx", ".safetensors", ".ckpt"))]
    large = [f for f in files if (REPO / f).is_file() and (REPO / f).stat().st_size > 500_000]
    assert weights == [] and large == ["datasets/64x64_SIGNS.zip"]


# ------------------------------------------------------------------------------------------ test scheduling


def test_the_test_scheduler_keeps_shared_fixture_modules_whole_and_spreads_the_rest(pytestconfig, monkeypatch):
    """conftest's pytest_xdist_make_scheduler: a module defining a module-scoped fixture is one unit of work (its
    fixture built once), any other test a unit of its own. It overrides a method of xdist's LoadScopeScheduling,
    which must still be there: an xdist release without it would build those fixtures on every worker."""
    from xdist.scheduler import LoadScopeScheduling

    from conftest import pytest_xdist_make_scheduler

    assert callable(vars(LoadScopeScheduling).get("_split_scope"))
    monkeypatch.setattr(pytestconfig.option, "dist", "loadgroup")
    monkeypatch.setattr(pytestconfig.option, "tx", ["popen"] * 2, raising=False)
    scheduler = pytest_xdist_make_scheduler(pytestconfig, None)
    assert isinstance(scheduler, LoadScopeScheduling)
    gate, adapt = "tests/test_gate.py::test_a_drop_fails_only_beyond_noise", "tests/test_adapt.py::test_x"
    assert scheduler._split_scope(gate) == "tests/test_gate.py"  # test_gate.py defines a module-scoped fixture
    assert scheduler._split_scope(adapt) == adapt
    monkeypatch.setattr(pytestconfig.option, "dist", "load")
    assert pytest_xdist_make_scheduler(pytestconfig, None) is None  # other modes: xdist's own schedulers
