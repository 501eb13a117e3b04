"""What a fresh clone needs: the default data inside the project, a complete hashed lock, light install roles."""

from __future__ import annotations

import hashlib
import re

import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO, run

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: its backport (in the lock for 3.10)
    import tomli as tomllib


PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
GROUPS = tomllib.loads((REPO / "pyproject.toml").read_text())["dependency-groups"]  # PEP 735: dev, unpublished


def tracked_files() -> list[str]:
    return run(["git", "ls-files", "-z"], REPO).stdout.strip("\0").split("\0")


def test_the_default_data_ships_with_the_project_pinned_by_its_hash():
    data = yaml.safe_load((REPO / "params.yaml").read_text())["data"]
    source = data["source"]
    assert not source.startswith(("/", "..")) and "://" not in source  # inside the project, on every machine
    assert source in tracked_files()  # committed to git, not a DVC output or a file left here by hand
    assert hashlib.sha256((REPO / source).read_bytes()).hexdigest() == data["sha256"]


def test_nothing_refers_to_files_outside_the_project():
    outside = "../" + "shared"  # this project's own machines have such a folder; a clone elsewhere does not
    hits = [p for p in tracked_files() if (REPO / p).is_file() and outside.encode() in (REPO / p).read_bytes()]
    assert hits == []


def _lock_entries() -> dict[str, list[tuple[str, str, int]]]:
    """name -> [(version, marker, number of hashes)] of requirements.txt (uv pip compile --generate-hashes)."""
    entries: dict[str, list[tuple[str, str, int]]] = {}
    for block in re.split(r"\n(?=[^\s#])", (REPO / "requirements.txt").read_text()):
        head = block.split("\\", 1)[0].strip()
        if not head or head.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)(?:\s*;\s*(.+))?", head)
        assert m, f"requirements.txt: not an exact pin: {head!r}"
        entries.setdefault(canonicalize_name(m[1]), []).append((m[2], m[3] or "", block.count("--hash=sha256:")))
    return entries


def test_the_lock_pins_every_dependency_with_hashes():
    lock = _lock_entries()
    for name, pins in lock.items():
        assert all(hashes > 0 for _, _, hashes in pins), f"{name} has no hash in requirements.txt"
    wanted = [Requirement(r) for r in PYPROJECT["dependencies"]]
    wanted += [Requirement(r) for extra in PYPROJECT["optional-dependencies"].values() for r in extra]
    wanted += [Requirement(r) for group in GROUPS.values() for r in group]
    here = default_environment()
    for req in wanted:
        pins = [
            v
            for v, marker, _ in lock.get(canonicalize_name(req.name), [])
            if not marker or Requirement(f"x; {marker}").marker.evaluate(here)
        ]
        assert pins, f"{req.name} is a dependency in pyproject.toml but not in requirements.txt: run make lock"
        assert all(req.specifier.contains(v, prereleases=True) for v in pins), (
            f"requirements.txt pins {req.name}=={pins[0]}, outside pyproject.toml's {req}: run make lock"
        )


def test_the_base_install_is_the_predict_role():
    """`pip install handsigns` is `handsigns predict`: ONNX Runtime, NumPy and Pillow; the pipeline is an extra."""
    assert sorted(Requirement(r).name for r in PYPROJECT["dependencies"]) == ["numpy", "onnxruntime", "pillow"]
    pipeline = {Requirement(r).name for r in PYPROJECT["optional-dependencies"]["pipeline"]}
    assert {"torch", "dvc", "dvclive", "pandas", "onnx"} <= pipeline


def test_development_tools_are_a_dependency_group_not_a_published_extra():
    """pytest and friends are PEP 735's `dev` group: `pip install handsigns[...]` never offers them."""
    assert set(PYPROJECT["optional-dependencies"]) == {"pipeline", "notebook"}
    assert {"pytest", "ruff", "uv", "playwright"} <= {Requirement(r).name for r in GROUPS["dev"]}
    header = (REPO / "requirements.txt").read_text().splitlines()[1]
    assert "uv pip compile pyproject.toml" in header and "--group dev" in header  # the command Dependabot re-runs
