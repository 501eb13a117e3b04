"""Typed, validated views of ``params.yaml``.

Each stage loads the sections it reads (``load_section("data", DataParams)``) and every key in them is
checked: type, range, allowed values, and unknown keys (a typo such as ``lr_rate`` is refused, never
ignored). Errors name the key, the value and what is allowed. Each section's dataclass lives in its own
module of this package, so a stage's code dependencies (``dvc.yaml``) name only the sections it reads and a
training knob added later never re-runs download or split.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from handsigns.errors import UserError

PARAMS_FILE = "params.yaml"
T = TypeVar("T")


def knob(default: Any, *, choices: tuple[Any, ...] | None = None, lo: float | None = None,
          hi: float | None = None, lo_open: bool = False, doc: str = "") -> Any:
    """A params field with its allowed values; ``lo_open`` makes the lower bound exclusive."""
    meta = {"choices": choices, "lo": lo, "hi": hi, "lo_open": lo_open, "doc": doc}
    return field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_value(key: str, value: Any, tp: Any, meta: dict[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (tp,) = [a for a in args if a is not type(None)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, tp) and not (tp is not bool and isinstance(value, bool))
    if not ok:
        raise UserError(f"params.yaml: {key} = {value!r} is a {type(value).__name__}; "
                        f"expected a {_type_name(tp)}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise UserError(f"params.yaml: {key} = {value!r} is not allowed; use one of {', '.join(map(str, choices))}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value < lo or (meta.get("lo_open") and value == lo)):
        bound = f"> {lo:g}" if meta.get("lo_open") else f">= {lo:g}"
        raise UserError(f"params.yaml: {key} = {value!r} is out of range; it must be {bound}")
    if hi is not None and value > hi:
        raise UserError(f"params.yaml: {key} = {value!r} is out of range; it must be <= {hi:g}")
    return value


def build(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise UserError(f"params.yaml: {where} must be a mapping of keys, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise UserError(f"params.yaml: unknown key {prefix}{unknown[0]}; known keys in {where}: "
                        f"{', '.join(sorted(fields))}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build(tp, raw.get(name, {}), f"{key}.")
        elif name in raw:
            kwargs[name] = _check_value(key, raw[name], tp, dict(f.metadata))
        elif f.default is dataclasses.MISSING:
            raise UserError(f"params.yaml: {key} is missing")
    return cls(**kwargs)


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path} not found; run from the project root (where params.yaml lives)") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} must be a mapping of keys, got {type(raw).__name__}")
    return raw


def load_section(name: str, cls: type[T], path: str | Path = PARAMS_FILE) -> T:
    """The validated section ``name`` of params.yaml (missing keys take the dataclass defaults)."""
    return build(cls, read_params(path).get(name, {}), f"{name}.")
