"""Atomic outputs under a full disk: one `error:` line naming the path, the previous version kept, no litter."""

import errno
import json
import sys

import pytest

from handsigns.errors import UserError
from handsigns.files import atomic_dir, write_json

from conftest import assert_user_error_exit, colour_dataset, make_project, run, run_stage

NO_SPACE = OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_mid_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"accuracy": 0.9})
    for failing_at in ("write", "fsync", "replace"):

        def fail(*args, **kwargs):
            raise NO_SPACE

        with pytest.MonkeyPatch.context() as mp:
            if failing_at == "write":
                mp.setattr("pathlib.Path.write_text", fail)
            else:
                mp.setattr(f"os.{failing_at}", fail)
            with pytest.raises(UserError, match=rf"no space left on the device while writing {target} .*unchanged"):
                write_json(target, {"accuracy": 0.1})
        assert json.loads(target.read_text()) == {"accuracy": 0.9}, failing_at
        assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"], failing_at  # no temporary file left


def test_a_folder_output_survives_a_failed_swap(tmp_path, monkeypatch):
    folder = tmp_path / "index"
    with atomic_dir(folder) as tmp:
        (tmp / "train.csv").write_text("v1")
    real = __import__("os").replace
    calls = []

    def second_replace_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the old version moved aside, the new one cannot move in
            raise NO_SPACE
        return real(src, dst)

    monkeypatch.setattr("os.replace", second_replace_fails)
    with pytest.raises(UserError, match=f"while writing {folder}"), atomic_dir(folder) as tmp:
        (tmp / "train.csv").write_text("v2")
    assert (folder / "train.csv").read_text() == "v1" and [p.name for p in tmp_path.iterdir()] == ["index"]


INJECT = """
import errno, os, runpy, sys
def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
os.replace = no_space
sys.argv = ["stages/split.py"]
runpy.run_path("stages/split.py", run_name="__main__")
"""


def test_a_stage_on_a_full_disk_is_one_error_line_and_keeps_its_outputs(tmp_path):
    source = colour_dataset(tmp_path / "source", per_class=6)
    project = make_project(tmp_path / "proj", {"source": str(source)})
    run_stage(project, "download", check=True)
    run_stage(project, "split", check=True)
    before = {p: p.read_bytes() for p in [*(project / "data/index").iterdir(), project / "metrics/data.json"]}
    params = (project / "params.yaml").read_text().replace("split_seed: 230", "split_seed: 7")
    (project / "params.yaml").write_text(params)  # the split would change
    proc = run([sys.executable, "-c", INJECT], project, check=False)
    assert_user_error_exit(proc, "no space left on the device while writing data/index", "free some space")
    assert {p: p.read_bytes() for p in before} == before
    assert not list(project.rglob("*.tmp")) and not list(project.rglob(".*.old.*"))
