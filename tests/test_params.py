"""params.load(DataParams): every key is validated and errors name the key and the value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from handsigns import params
from handsigns.errors import UserError
from handsigns.params.data import DataParams

SHA = "c632a4c898bf11cc3703e614a87a60a90d65959d6bbcdf3e815129d8885cf170"


def load(tmp_path: Path, data: object, **other: object) -> DataParams:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"data": data, **other}))
    return params.load(DataParams, path)


def load_error(tmp_path: Path, data: object) -> str:
    with pytest.raises(UserError) as info:
        load(tmp_path, data)
    return str(info.value)


def test_defaults_fill_missing_keys(tmp_path):
    p = load(tmp_path, {"source": "x.zip"})
    assert p == DataParams(source="x.zip")
    assert (p.sha256, p.download_retries, p.split_seed, p.dedupe, p.on_bad_file) == (None, 4, 230, "drop", "error")


def test_repository_params_file_is_valid():
    p = params.load(DataParams, Path(__file__).resolve().parents[1] / "params.yaml")
    assert p.source


def test_other_sections_are_ignored(tmp_path):
    assert load(tmp_path, {"source": "x"}, train={"lr": 0.1}).source == "x"


def test_int_accepted_for_float_and_sha_normalised(tmp_path):
    p = load(tmp_path, {"source": "x", "download_timeout_s": 5, "sha256": f"  {SHA.upper()} "})
    assert p.download_timeout_s == 5.0 and isinstance(p.download_timeout_s, float)
    assert p.sha256 == SHA


def test_unknown_key_is_refused_by_name(tmp_path):
    msg = load_error(tmp_path, {"source": "x", "sourse": "y"})
    assert "unknown key data.sourse" in msg
    assert "split_seed" in msg  # lists the known keys


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("download_retries", "four", "int"),
        ("download_retries", 2.5, "int"),
        ("download_retries", True, "int"),  # a bool is not an int here
        ("val_fraction", "0.2", "float"),
        ("split_seed", None, "int"),
        ("source", 5, "str"),
        ("dedupe", ["drop"], "str"),
    ],
)
def test_wrong_type(tmp_path, key, value, expected):
    msg = load_error(tmp_path, {"source": "x", key: value})
    assert f"data.{key} = {value!r}" in msg
    assert f"expected a {expected}" in msg


@pytest.mark.parametrize(
    ("key", "value", "bound"),
    [
        ("download_retries", -1, ">= 0"),
        ("download_retries", 101, "<= 100"),
        ("download_timeout_s", 0, "> 0"),
        ("val_fraction", 0.0, "> 0"),
        ("val_fraction", 1.5, "<= 1"),
        ("test_fraction", -0.1, "> 0"),
        ("near_duplicate_max_difference", 1.01, "<= 1"),
        ("split_seed", -3, ">= 0"),
    ],
)
def test_out_of_range(tmp_path, key, value, bound):
    msg = load_error(tmp_path, {"source": "x", key: value})
    assert f"data.{key} = {value!r}" in msg or f"data.{key} = {float(value)!r}" in msg
    assert "out of range" in msg and bound in msg


@pytest.mark.parametrize(("key", "value"), [("dedupe", "delete"), ("on_bad_file", "ignore"), ("dedupe", "Drop")])
def test_bad_choice(tmp_path, key, value):
    msg = load_error(tmp_path, {"source": "x", key: value})
    assert f"data.{key} = {value!r} is not allowed" in msg


@pytest.mark.parametrize("value", ["abc", SHA[:-1], SHA + "0", "g" * 64, "sha256:" + SHA[7:]])
def test_bad_sha256(tmp_path, value):
    msg = load_error(tmp_path, {"source": "x", "sha256": value})
    assert "data.sha256" in msg and repr(value) in msg and "64 hex digits" in msg


def test_empty_source(tmp_path):
    assert "data.source is empty" in load_error(tmp_path, {"source": ""})
    assert "data.source is empty" in load_error(tmp_path, {})


def test_section_must_be_a_mapping(tmp_path):
    assert "data must be a mapping" in load_error(tmp_path, ["source", "x"])


def test_missing_file(tmp_path):
    missing = tmp_path / "nowhere" / "params.yaml"
    with pytest.raises(UserError, match="not found"):
        params.load(DataParams, missing)


def test_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  source: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        params.load(DataParams, path)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="must be a mapping"):
        params.load(DataParams, path)


def test_the_recipe_is_the_top_level_less_the_other_stages_sections(tmp_path):
    from handsigns.params.recipe import RecipeParams

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"data": {"anything": 1}, "ci": {}, "lr": 0.1, "model": {"dropout": 0.0}}))
    recipe = params.load(RecipeParams, path)
    assert (recipe.lr, recipe.model.dropout, recipe.epochs) == (0.1, 0.0, RecipeParams().epochs)
    path.write_text(yaml.safe_dump({"lr_rate": 0.1}))
    with pytest.raises(UserError, match="unknown key lr_rate; known keys in the top level: batch_size"):
        params.load(RecipeParams, path)
