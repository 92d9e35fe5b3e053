"""Settings are declared once (`setting()`), and a refusal names a setting as its caller spells
it: the Python API by its field (`fc_k`), the command line by its flag (`--fc-k`: one line on
stderr, exit 2). Every flag of serve, bench, export-model and pretrain is made from the
declarations, and every declaration's help is one sentence under its section's heading (the
measurements behind it live in decisions.md)."""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import make_tiny, make_tiny_dense
from support import FC_HEAVY_MODULE, assert_one_line_error, get_assets, run_main, snapshot

import rlprune
from rlprune.agent.config import MAX_SEED, SearchConfig
from rlprune.models.errors import SettingError, UserError
from rlprune.models.settings import SECTIONS
from rlprune.service.bench.plan import MAX_BENCH_SEEDS, BenchConfig
from rlprune.service.cli.flags import DECLARED, Console
from rlprune.service.cli.main import build_parser
from rlprune.service.http.settings import ServeConfig
from rlprune.service.jobs.export_config import ExportConfig
from rlprune.service.jobs.pretrain_config import PretrainConfig

DECISIONS = Path(__file__).resolve().parent.parent / "docs" / "decisions.md"
QUICK = {"episodes": 4, "warmup": 2, "finetune_epochs": 0, "hidden": (16, 16),
         "batch_size": 8}
QUICK_FLAGS = ("--episodes", "4", "--warmup", "2", "--finetune-epochs", "0", "--quiet")
HEAVY = ("--model", f"{FC_HEAVY_MODULE}:make", "--weights", "{heavy}", "--dataset", "digits")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """A folder holding an interrupted run (3 of 6 episodes done), made from Python objects,
    and the FC-heavy model's untrained weights."""
    root = tmp_path_factory.mktemp("setting_errors")
    assets = get_assets(tmp_path_factory)
    dense = make_tiny_dense()

    def stop_at_three(event) -> bool:
        return not (event.kind == "episode" and event.episode == 3)

    cut = rlprune.search(make_tiny(0), dense.data, target=0.5, run_dir=root / "cut",
                         callback=stop_at_three, fc_rule="agent", checkpoint_every=1,
                         **{**QUICK, "episodes": 6})
    assert cut.state == "interrupted" and cut.episodes_done == 3
    return {"root": root, "assets": assets, "dense": dense, "cut": str(root / "cut"),
            "heavy": str(assets.fc_heavy_dense)}


def _fc_heavy(ctx):
    from rlprune.models.data import load_dataset
    from rlprune.models.registry import build_model
    from rlprune.models.train import load_weights

    model = build_model(f"{FC_HEAVY_MODULE}:make")
    load_weights(model, ctx["heavy"])
    return model, load_dataset("digits")


def _bench(ctx, **plan):
    from rlprune.service.bench.runner import run_bench

    run_bench(ctx["dense"], SearchConfig(), **{"targets": [0.5], "methods": ["uniform"],
                                               "seeds": 1, **plan}, out=Path("b"))


def _load(name: str, data_dir: str):
    from rlprune.models.data import load_dataset

    return load_dataset(name, data_dir)


# (case, field, the flags the CLI's line names, the API call, the command line)
CASES: list[tuple[str, str, tuple[str, ...], Callable, list[str]]] = [
    ("fc_k auto finds no usable k", "fc_k", ("--fc-k", "--fc-rule"),
     lambda c: rlprune.search(*_fc_heavy(c), target=0.9, **QUICK),
     ["search", *HEAVY, "--target", "0.9", *QUICK_FLAGS]),
    ("qat_epochs without int8", "qat_epochs", ("--qat-epochs", "--quantize"),
     lambda c: rlprune.export("nope", "m.rlprune", qat_epochs=2),
     ["export-model", "nope", "--out", "m.rlprune", "--qat-epochs", "2"]),
    ("export format not a choice", "format", ("--format",),
     lambda c: rlprune.export("nope", "m.rlprune", format="tflite"),
     ["export-model", "nope", "--out", "m.rlprune", "--format", "tflite"]),
    ("a resume's episodes below those done", "episodes", ("--episodes",),
     lambda c: rlprune.resume(c["cut"], episodes=2),
     ["resume", "{cut}", "--episodes", "2"]),
    ("bench seeds past the last seed", "first_seed", ("--first-seed",),
     lambda c: _bench(c, seeds=2, first_seed=MAX_SEED),
     ["bench", "--model", "lenet300", "--dataset", "digits", "--seeds", "2",
      "--first-seed", str(MAX_SEED), "--out", "b"]),
    ("bench seeds too many", "seeds", ("--seeds",),
     lambda c: _bench(c, seeds=MAX_BENCH_SEEDS + 1),
     ["bench", "--model", "lenet300", "--dataset", "digits", "--seeds",
      str(MAX_BENCH_SEEDS + 1), "--out", "b"]),
    ("gpus per worker without Ray", "gpus_per_worker",
     ("--gpus-per-worker", "--ray-address", "--device"),
     lambda c: rlprune.search(make_tiny(0), c["dense"].data, gpus_per_worker=1.0, **QUICK),
     ["search", *HEAVY, "--gpus-per-worker", "1", *QUICK_FLAGS]),
    ("episodes not a multiple of workers", "episodes", ("--episodes", "--workers"),
     lambda c: rlprune.search(make_tiny(0), c["dense"].data, workers=3, **QUICK),
     ["search", *HEAVY, "--workers", "3", *QUICK_FLAGS]),
    ("cifar10 not in its folder", "data_dir", ("--data-dir", "--download"),
     lambda c: _load("cifar10", "nodata"),
     ["pretrain", "--model", "lenet5", "--dataset", "cifar10", "--data-dir", "nodata",
      "--out", "x.pt"]),
]


@pytest.fixture
def here(ctx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ctx["assets"].models))
    return tmp_path


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_the_api_names_the_field(case, ctx, here):
    _, field, _, call, _ = case
    with pytest.raises(SettingError) as info:
        call(ctx)
    message = str(info.value)
    assert info.value.setting == field and re.search(rf"(?<![\w-]){field}(?![\w-])", message)
    assert "--" not in message, message  # no flag: a Python user never typed one
    assert list(here.iterdir()) == []


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_the_command_line_names_the_flag(case, ctx, here, capsys):
    _, field, flags, _, argv = case
    before = snapshot(ctx["root"])
    code, out, err = run_main(capsys, *[arg.format(**ctx) for arg in argv])
    line = assert_one_line_error(code, err)
    assert out == "" and all(flag in line for flag in flags), line
    assert "`" + field + "`" not in line and ("_" not in field or field not in line), line
    assert list(here.iterdir()) == [] and snapshot(ctx["root"]) == before


def test_a_setting_error_keeps_its_names_through_pickling():
    """Refusals cross process boundaries (workers, Ray tasks) whole."""
    exc = SettingError("episodes", "(5) must be a multiple of `workers` 2", others=("workers",))
    back = pickle.loads(pickle.dumps(exc))
    assert (back.setting, back.detail, back.others, back.lead) == (
        "episodes", "(5) must be a multiple of `workers` 2", ("workers",), True)
    assert str(back) == "episodes (5) must be a multiple of `workers` 2"
    assert back.text(lambda name: "--" + name) == "--episodes (5) must be a multiple of --workers 2"
    inside = SettingError("fc_rule", "use `fc_rule` agent", lead=False)
    assert inside.text(lambda name: "--fc-rule") == "use --fc-rule agent"
    assert isinstance(back, UserError)


# -- the declarations ----------------------------------------------------------------------------
SETTINGS_CLASSES = (SearchConfig, ServeConfig, BenchConfig, ExportConfig, PretrainConfig, Console)
SETTINGS_HEAD = "## Settings: the measurements behind the defaults"
NOTE = re.compile(r"\*\*`(\w+)` \(")  # a note in decisions.md's Settings: **`field` (flag)


@pytest.mark.parametrize("cls", SETTINGS_CLASSES, ids=lambda cls: cls.__name__)
def test_every_help_text_is_one_sentence_under_a_known_section(cls):
    """At most 110 characters, one line, no pointer to a doc: the notes are in decisions.md;
    the section names a heading that exists."""
    for f in dataclasses.fields(cls):
        doc = f.metadata["doc"]
        assert len(doc) <= 110 and "\n" not in doc, (f.name, len(doc), doc)
        assert "docs/" not in doc, (f.name, doc)
        assert f.metadata["section"] in ("", *SECTIONS), f.name


def test_every_settings_note_is_on_a_setting_that_exists():
    """decisions.md's Settings notes name declared fields (a renamed field takes its note)."""
    section = DECISIONS.read_text().split(SETTINGS_HEAD)
    assert len(section) == 2, "decisions.md has no Settings section"
    noted = NOTE.findall(section[1])
    declared = {f.name for cls in SETTINGS_CLASSES for f in dataclasses.fields(cls)}
    assert len(noted) > 20 and set(noted) <= declared, set(noted) - declared


@pytest.mark.parametrize("command", ["search", "baseline", "bench", "submit", "serve",
                                     "pretrain", "export-model", "resume", "apply"])
def test_help_lists_each_flag_once_under_its_section(command):
    """Each declared flag sits in the group headed by its section, the groups in the order of
    `SECTIONS`, and the usage line names no optional flag."""
    parser = _subparsers(build_parser())[command]
    titles = [g.title for g in parser._action_groups]
    headings = [t for t in titles if t in SECTIONS.values()]
    assert headings == sorted(headings, key=list(SECTIONS.values()).index)
    assert len(headings) == len(set(headings))
    placed = 0
    for group in parser._action_groups:
        for action in group._group_actions:
            field = _declaration_of(action)
            if field is not None:
                placed += 1
                key = field.metadata["section"]
                assert group.title == (SECTIONS[key] if key else "options"), action.dest
    assert placed >= 1
    text = parser.format_help()
    usage = text.split("\n\n")[0]
    optional = [a for a in parser._actions if a.option_strings and not a.required]
    assert not any(s in usage for a in optional for s in a.option_strings if s != "-h"), usage
    assert len(text.splitlines()) < 4 * len(parser._actions) + 10


def _declaration_of(action: argparse.Action) -> dataclasses.Field | None:
    """The declared field a flag was made from (its dest and help), or None (a command's own)."""
    for cls in SETTINGS_CLASSES:
        for f in dataclasses.fields(cls):
            if f.name == action.dest and (action.help or "").startswith(
                    f.metadata["doc"].replace("%", "%%")):
                return f
    return None


def test_the_description_names_both_granularities():
    text = build_parser().format_help()
    assert "weight" in text and "channel" in text, text


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _flags_of(cls: type, names) -> set[str]:
    """The flags a declaration asks for, read from the fields' metadata."""
    fields = [f for f in dataclasses.fields(cls) if names is None or f.name in names]
    assert names is None or len(fields) == len(names)
    out = set()
    for f in fields:
        meta = f.metadata
        out |= {meta["negate"] or meta["flag"] or "--" + f.name.replace("_", "-"),
                *meta["aliases"]}
    return out


@pytest.mark.parametrize(("command", "positionals"), [
    ("serve", []), ("bench", []), ("export-model", ["run"]), ("pretrain", [])])
def test_the_commands_flags_are_exactly_the_declared_ones(command, positionals):
    parser = _subparsers(build_parser())[command]
    declared = set().union(*(_flags_of(cls, names) for cls, names in DECLARED[command]))
    options = {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}
    assert options == declared, (options - declared, declared - options)
    assert [a.dest for a in parser._actions if not a.option_strings] == positionals
    defaults = {f.name: f.default for cls, names in DECLARED[command]
                for f in dataclasses.fields(cls) if names is None or f.name in names}
    for action in parser._actions:
        if action.option_strings and action.dest in defaults:
            assert action.default == defaults[action.dest] or isinstance(action.default, bool)
