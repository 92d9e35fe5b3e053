"""Command-line flags made from `SearchConfig`'s declarations (name, default, help, choices),
so that a setting is declared once; and the config a command's parsed flags ask for."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence

from rlprune.agent.config import SearchConfig
from rlprune.models.settings import choices_of

PLAIN_TYPES = {int: int, float: float, str: str}


def typed(parse: Callable[[str], object], metavar: str | None) -> Callable[[str], object]:
    def convert(text: str) -> object:
        try:
            return parse(text)
        except (TypeError, ValueError):
            expected = f"; expected {metavar}" if metavar else ""
            raise argparse.ArgumentTypeError(f"invalid value {text!r}{expected}") from None

    return convert


def add_settings(p: argparse.ArgumentParser, names: Sequence[str], cls: type = SearchConfig,
                 **defaults: object) -> None:
    """One flag per field of the settings dataclass `cls` (default `SearchConfig`) in `names`,
    from its declaration (`defaults` overrides a field's default for this command)."""
    hints = typing.get_type_hints(cls)
    declared = {f.name: f for f in dataclasses.fields(cls)}
    for name in names:
        f, meta = declared[name], declared[name].metadata
        default = defaults.get(name, f.default)
        doc = meta["doc"].replace("%", "%%")
        flag = _flag(name, meta)
        if hints[name] is bool:
            action = "store_false" if meta["negate"] else "store_true"
            p.add_argument(flag, dest=name, action=action, help=doc)
            continue
        base = hints[name]
        if isinstance(base, types.UnionType):  # `X | None`: parsed as X
            base = next(a for a in typing.get_args(base) if a is not type(None))
        parse = meta["parse"] or PLAIN_TYPES[base]
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        p.add_argument(flag, *meta["aliases"],
                       dest=name, default=default, type=typed(parse, meta["metavar"]),
                       choices=choices_of(meta), metavar=meta["metavar"],
                       help=f"{doc} (default: {shown})")


def _flag(name: str, meta) -> str:
    return meta.get("negate") or meta.get("flag") or "--" + name.replace("_", "-")


def flag_for(name: str) -> str:
    """The command-line flag of a setting (a `SearchConfig` field, or another command's)."""
    from rlprune.service.bench.plan import BenchPlan
    from rlprune.service.http.settings import ServeConfig

    for cls in (SearchConfig, ServeConfig, BenchPlan):
        for f in dataclasses.fields(cls):
            if f.name == name:
                return _flag(name, f.metadata)
    return "--" + name.replace("_", "-")


def names_in(*groups: str, without: Sequence[str] = ()) -> list[str]:
    """The `SearchConfig` fields of these groups, group by group in declaration order."""
    return [f.name for group in groups for f in dataclasses.fields(SearchConfig)
            if f.metadata["group"] == group and f.name not in without]


SOURCE = ("model", "dataset", "data_dir", "download")
SEARCH_SETTINGS = names_in("source", "problem", "agent", "job")
BASELINE_SETTINGS = [*names_in("source", "problem"), "episodes"]  # episodes: random search
BENCH_SETTINGS = names_in("source", "problem", "agent", without=("target", "seed"))


def config_from(args: argparse.Namespace, names: Sequence[str], **fixed) -> SearchConfig:
    """The `SearchConfig` the parsed flags ask for (other fields at their defaults)."""
    return SearchConfig(**{name: getattr(args, name) for name in names}, **fixed)
