"""Typed, validated views of ``params.yaml``.

One loader, :func:`load`: each stage loads the params it reads (``load(DataParams)``, ``load(RecipeParams)``)
and every key in them is checked: type, range, allowed values, and unknown keys (a typo such as ``lr_rate``
is refused, never ignored). Errors name the key, the value and what is allowed. Each section's dataclass
lives in its own module of this package, named after its section, so a stage's code dependencies
(``dvc.yaml``) name only the sections it reads and a training knob added later never re-runs download or
split. What each knob does is written once, beside it in ``params.yaml``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from handsigns.errors import UserError

PARAMS_FILE = "params.yaml"


class Section:
    """The base of each section's dataclass: what :func:`load` reads off the class."""

    SECTION: ClassVar[str | None]  # its section of params.yaml; None: the top level
    OTHER_SECTIONS: ClassVar[tuple[str, ...]] = ()  # at the top level, the sections other stages validate


T = TypeVar("T", bound=Section)
N = TypeVar("N", int, float)


def knob(
    default: Any,
    *,
    choices: tuple[Any, ...] | None = None,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    auto: bool = False,
) -> Any:
    """A params field with its allowed values; ``lo_open`` makes the lower bound exclusive; ``auto``: the value
    may also be ``auto`` (annotate it ``float | str``), which the train stage decides (:mod:`handsigns.adapt`)."""
    meta = {"choices": choices, "lo": lo, "hi": hi, "lo_open": lo_open, "auto": auto}
    return field(default=default, metadata=meta)


AUTO = "auto"


def decided(key: str, value: N | str) -> N:
    """The number an ``auto`` knob holds once the train stage has decided it (:func:`handsigns.adapt.resolve`);
    still ``auto`` here is a caller's slip, not a user's."""
    if isinstance(value, str):
        raise ValueError(f"{key} is auto: handsigns.adapt.resolve decides it first")
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_value(key: str, value: Any, tp: Any, meta: dict[str, Any]) -> Any:
    if meta.get("auto"):
        if value == AUTO:
            return value
        (tp,) = [a for a in typing.get_args(tp) if a is not str]  # the number it may also be
        if isinstance(value, str):
            raise UserError(f"params.yaml: {key} = {value!r} is not allowed; use a number or auto")
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
        raise UserError(f"params.yaml: {key} = {value!r} is a {type(value).__name__}; expected a {_type_name(tp)}")
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
        raise UserError(
            f"params.yaml: unknown key {prefix}{unknown[0]}; known keys in {where}: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[name] = build(tp, raw.get(name, {}), f"{key}.")
        elif name in raw:
            kwargs[name] = _check_value(key, raw[name], tp, dict(f.metadata))
        elif f.default is dataclasses.MISSING:
            raise UserError(f"params.yaml: {key} is missing")
    return cls(**kwargs)


def parse_params(text: str, where: str = PARAMS_FILE) -> dict[str, Any]:
    """The mapping a params.yaml text holds (``where`` names it in errors)."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{where} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping of keys, got {type(raw).__name__}")
    return raw


def load(cls: type[T], path: str | Path = PARAMS_FILE, *, raw: dict[str, Any] | None = None) -> T:
    """The validated params ``cls`` describes, from ``path`` (or an already parsed ``raw`` mapping).

    ``cls.SECTION`` names its section of params.yaml; ``None`` is the top level, where the other sections
    (``cls.OTHER_SECTIONS``) are skipped: their own stages validate them. Missing keys take the defaults.
    """
    if raw is None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"{path} not found; run from the project root (where params.yaml lives)") from None
        raw = parse_params(text, str(path))
    section = cls.SECTION
    if section is None:
        skipped = cls.OTHER_SECTIONS
        return build(cls, {k: v for k, v in raw.items() if k not in skipped})
    return build(cls, raw.get(section, {}), f"{section}.")
