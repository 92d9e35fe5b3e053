"""Command-line flags made from the settings' declarations (name, default, help, choices):
the job's (`SearchConfig`) and each command's own (`ServeConfig`, `BenchConfig`,
`ExportConfig`, `PretrainConfig`, the console's `Console`), so that a setting is declared
once; the settings a command's parsed flags ask for; and a `SettingError` in flags' words."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rlprune.agent.config import SearchConfig
from rlprune.models.errors import SettingError, UserError
from rlprune.models.settings import SECTIONS, choices_of, setting
from rlprune.service.bench.plan import BenchConfig
from rlprune.service.http.settings import ServeConfig
from rlprune.service.jobs.export_config import ExportConfig
from rlprune.service.jobs.pretrain_config import PretrainConfig

PLAIN_TYPES = {int: int, float: float, str: str}
# a number's value in `--help` and in a refusal, where its declaration names none
NUMBER_METAVARS = {int: ("N", "a whole number"), float: ("X", "a number")}


@dataclass
class Console:
    """What the command line shows while a job runs."""

    quiet: bool = setting(False, "No progress bars or lines (a bench still prints one line per "
                          "finished run).", section="run")


# every settings class a flag is made from; a field's flag is its first declaration's
CONFIGS = (SearchConfig, ServeConfig, BenchConfig, ExportConfig, PretrainConfig, Console)


def typed(parse: Callable[[str], object], expected: str | None) -> Callable[[str], object]:
    """`parse` with its failure as argparse reports it: the value, and what was `expected`."""
    def convert(text: str) -> object:
        try:
            return parse(text)
        except (TypeError, ValueError):
            expected_text = f"; expected {expected}" if expected else ""
            raise argparse.ArgumentTypeError(f"invalid value {text!r}{expected_text}") from None
        except UserError as exc:  # a parse that reads a file says what is wrong with it
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def add_settings(p: argparse.ArgumentParser, names: Sequence[str] | None = None,
                 cls: type = SearchConfig, **defaults: object) -> None:
    """One flag per field of the settings dataclass `cls` (default `SearchConfig`) in `names`
    (default: every field), from its declaration (`defaults` overrides a field's default for
    this command)."""
    hints = typing.get_type_hints(cls)
    declared = {f.name: f for f in dataclasses.fields(cls)}
    for name in declared if names is None else names:
        f = declared[name]
        _add_flag(section(p, f.metadata["section"]), name, f.metadata, hints[name],
                  defaults.get(name, f.default))


def section(p: argparse.ArgumentParser, key: str) -> Any:
    """Where a flag of section `key` (`settings.SECTIONS`) goes in `p`'s `--help`: the
    argument group under its heading (made on first use), or `p` itself for no section."""
    if not key:
        return p
    title = SECTIONS[key]
    found = [g for g in p._action_groups if g.title == title]
    return found[0] if found else p.add_argument_group(title)


def tidy_help(p: argparse.ArgumentParser) -> None:
    """`p`'s `--help` in reading order: its own options first, then the sections in the order
    of `SECTIONS`; the usage line names the positionals and the required flags only."""
    order = {title: i for i, title in enumerate(SECTIONS.values())}
    p._action_groups.sort(key=lambda g: order.get(g.title or "", -1))  # stable: own first
    shown = [str(a.metavar or a.dest) for a in p._actions if not a.option_strings]
    shown += [f"{a.option_strings[0]} {a.metavar or a.dest.upper()}" for a in p._actions
              if a.option_strings and a.required]
    p.usage = " ".join(["%(prog)s", *shown, "[options]"])


def _add_flag(p: Any, name: str, meta, hint: Any, default: Any) -> None:
    """One setting's flag: a switch for a bool, else a typed value (several values, space
    separated, for a tuple without its own `parse`)."""
    doc = meta["doc"].replace("%", "%%")
    flag = _flag(name, meta)
    if hint is bool:
        action = "store_false" if meta["negate"] else "store_true"
        p.add_argument(flag, dest=name, action=action, help=doc)
        return
    base = hint
    if isinstance(base, types.UnionType):  # `X | None`: parsed as X
        base = next(a for a in typing.get_args(base) if a is not type(None))
    many = typing.get_origin(base) is tuple and meta["parse"] is None
    parse = meta["parse"] or PLAIN_TYPES[typing.get_args(base)[0] if many else base]
    shown = (" " if many else ",").join(map(str, default)) if isinstance(default, tuple) \
        else default
    if default not in (None, ()) and not meta["required"] and "default" not in doc.lower():
        doc = f"{doc} (default: {shown})"  # unless the doc says it
    metavar, expected = meta["metavar"], meta["metavar"]
    if metavar is None and not meta["choices"] and base in NUMBER_METAVARS:
        metavar, expected = NUMBER_METAVARS[base]
    p.add_argument(flag, *meta["aliases"], dest=name, default=default,
                   type=typed(parse, expected), choices=choices_of(meta),
                   metavar=metavar, help=doc, required=meta["required"],
                   **({"nargs": "+"} if many else {}))


def _flag(name: str, meta) -> str:
    return meta.get("negate") or meta.get("flag") or "--" + name.replace("_", "-")


def flag_for(name: str) -> str:
    """The command-line flag of a setting (a field of one of `CONFIGS`)."""
    for cls in CONFIGS:
        for f in dataclasses.fields(cls):
            if f.name == name:
                return _flag(name, f.metadata)
    return "--" + name.replace("_", "-")  # a command's own argument (`run_dir`)


def error_text(exc: SettingError) -> str:
    """The refusal as the command line says it: each setting named by its flag."""
    return exc.text(flag_for)


def names_in(*groups: str, without: Sequence[str] = ()) -> list[str]:
    """The `SearchConfig` fields of these groups, group by group in declaration order."""
    return [f.name for group in groups for f in dataclasses.fields(SearchConfig)
            if f.metadata["group"] == group and f.name not in without]


SOURCE = ("model", "dataset", "data_dir", "download")
SEARCH_SETTINGS = names_in("source", "problem", "agent", "job")
BASELINE_SETTINGS = [*names_in("source", "problem"), "episodes"]  # episodes: random search
BENCH_SETTINGS = names_in("source", "problem", "agent", without=("target", "seed"))
PRETRAIN_SETTINGS = [*SOURCE, "seed", "device"]
# the commands whose every flag is made from declarations: (settings class, its fields or
# None for all of them), in the order `--help` lists them
DECLARED: dict[str, tuple[tuple[type, Sequence[str] | None], ...]] = {
    "pretrain": ((SearchConfig, PRETRAIN_SETTINGS), (PretrainConfig, None)),
    "bench": ((SearchConfig, BENCH_SETTINGS), (BenchConfig, None), (Console, None)),
    "serve": ((ServeConfig, None),),
    "export-model": ((ExportConfig, None),),
}


def add_declared(p: argparse.ArgumentParser, command: str) -> None:
    """Every flag of `command` (one of `DECLARED`), from the declarations."""
    for cls, names in DECLARED[command]:
        add_settings(p, names, cls)


def settings_from(args: argparse.Namespace, cls: type, names: Sequence[str] | None = None,
                  **fixed) -> Any:
    """The `cls` settings the parsed flags ask for (fields not in `names` at their
    defaults); several values come as a tuple, as the field holds them."""
    names = [f.name for f in dataclasses.fields(cls)] if names is None else names
    given = {name: getattr(args, name) for name in names}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()},
               **fixed)


def config_from(args: argparse.Namespace, names: Sequence[str], **fixed) -> SearchConfig:
    """The `SearchConfig` the parsed flags ask for (other fields at their defaults)."""
    return settings_from(args, SearchConfig, names, **fixed)
