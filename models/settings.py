"""Documented settings: a dataclass field that carries its own documentation and limits.

`EnvConfig`, `SearchConfig` and the commands' own settings (`ServeConfig`, `BenchConfig`,
`ExportConfig`, `PretrainConfig`) declare every field with `setting(...)`; the command line,
the Python API and validation all read the same declaration, so a default, a help text or a
limit exists once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rlprune.models.errors import SettingError

# where a setting is listed in `--help`: each section's key and its heading, in the order the
# headings come (a field without a section is listed under the command's own options)
SECTIONS = {
    "bench": "the bench",
    "data": "data and model",
    "pretrain": "training",
    "budget": "what is pruned, and how much",
    "reward": "reward (the proxy evaluation of an episode)",
    "search": "search (the agent)",
    "selection": "selection (short fine-tunes after the search)",
    "finetune": "fine-tune and result",
    "run": "run folder and output",
    "scale": "device and scale-out",
    "service": "the service",
    "jobs": "how the service runs jobs",
}


def setting(default: Any, doc: str, *,
            choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None,
            min: float | None = None, max: float | None = None,  # noqa: A002
            group: str = "problem", section: str = "", flag: str | None = None,
            aliases: Sequence[str] = (),
            parse: Callable[[str], Any] | None = None, metavar: str | None = None,
            negate: str | None = None, required: bool = False) -> Any:
    """A dataclass field with its documentation and limits.

    :param default: the default value (tuples for sequences, so the default is immutable)
    :param doc: what the setting means, for `--help` and the docs: one sentence of at most
        110 characters; measurements and reasons go to docs/decisions.md ("Settings")
    :param choices: the values allowed, or a function that lists them when asked (a registry
        that can grow)
    :param min: the smallest value allowed (numbers)
    :param max: the largest value allowed (numbers)
    :param group: `problem` (what is pruned and how it is scored: search, baseline, bench),
        `agent` (the search's agent: search and bench), `job` (search only), `source` (where the
        data comes from: every command that loads data): which commands take it
    :param section: the `--help` heading it is listed under (a key of `SECTIONS`; empty: the
        command's own options)
    :param flag: the command-line flag, if not `--` + the name with dashes
    :param aliases: further flags accepted for the same setting (old names)
    :param parse: text to value, where the type alone does not say how
    :param metavar: the value's name in `--help`
    :param negate: for a bool that defaults to True, the flag that turns it off
    :param required: the command line requires the flag (the value has no useful default)
    """
    if choices is not None and not callable(choices):
        choices = tuple(choices)
    if section and section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}; the sections are {', '.join(SECTIONS)}")
    meta = {"doc": doc, "choices": choices, "min": min, "max": max, "group": group,
            "section": section, "flag": flag, "aliases": tuple(aliases),
            "parse": parse, "metavar": metavar, "negate": negate, "required": required}
    return dataclasses.field(default=default, metadata=meta)


def check(obj: Any) -> None:
    """Refuse a value outside its field's choices or limits, naming the field and the limit."""
    for f in dataclasses.fields(obj):
        meta, value = f.metadata, getattr(obj, f.name)
        if not meta:
            continue
        name = f.name
        choices = choices_of(meta)
        if choices is not None and value not in choices:
            raise SettingError(name, f"must be one of {', '.join(map(str, choices))}, "
                               f"got {value!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            raise SettingError(name, f"must be a finite number, got {value}")
        if meta["min"] is not None and value < meta["min"]:
            raise SettingError(name, f"must be at least {_show(meta['min'])}, got "
                               f"{_show(value)}")
        if meta["max"] is not None and value > meta["max"]:
            raise SettingError(name, f"must be at most {_show(meta['max'])}, got "
                               f"{_show(value)}")


def choices_of(meta: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The values a setting allows, as they are now."""
    choices = meta["choices"]
    return tuple(choices()) if callable(choices) else choices


def _show(number: float) -> str:
    """A limit or a value as a person reads it: whole numbers whole, a huge one shortened."""
    if isinstance(number, int):
        text = str(number)
        return text if len(text) <= 20 else f"{text[:6]}...({len(text)} digits)"
    return f"{number:g}"


_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text",
          type(None): "null"}


def _fits(value: Any, hint: Any) -> tuple[bool, Any]:
    """Whether `value` (from JSON) is of type `hint`, and the value as the field holds it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        for arg in args:
            ok, out = _fits(value, arg)
            if ok:
                return True, out
        return False, value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False, value
        items = [_fits(item, args[0]) for item in value]
        return all(ok for ok, _ in items), tuple(out for _, out in items)
    if hint is type(None):
        return value is None, value
    if isinstance(value, bool) or hint is bool:
        return isinstance(value, bool) and hint is bool, value
    if hint is float:
        return isinstance(value, int | float), float(value) if isinstance(
            value, int | float) else value
    return isinstance(value, hint), value


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(arg) for arg in args)
    if origin is tuple:
        return f"a list of {_describe(args[0]).removeprefix('a ')}s"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def received(value: Any) -> str:
    """A value as the JSON (or the page's form) that sent it: null, true, 'text', 3."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def typed_fields(cls: type, data: dict) -> dict:
    """`data`'s values for `cls`'s dataclass fields, each checked against the field's type
    (unknown keys are left out); a SettingError names the first that does not fit."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            ok, value = _fits(data[f.name], hints[f.name])
            if not ok:
                raise SettingError(f.name, f"must be {_describe(hints[f.name])}, got "
                                   f"{received(data[f.name])}")
            out[f.name] = value
    return out
