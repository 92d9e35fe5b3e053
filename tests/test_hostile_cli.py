"""The command line as an adversarial user meets it: numbers that are not numbers, numbers too
large to mean anything, settings of the other granularity, files and folders that do not fit,
a service started with impossible settings, ^C at any moment of set-up.

Every refusal is one line, exit 2, before any work, and nothing in the working folder is
new or changed (the folder is compared before and after). `test_bad_input.py` holds the
ordinary bad input; these are the cases that slipped through it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import typing

import pytest
import torch
from support import (
    MODEL_MODULE,
    assert_one_line_error,
    copy_run,
    get_assets,
    get_fleet,
    run_main,
    snapshot,
)

from rlprune.agent.config import SearchConfig
from rlprune.service.cli.flags import SEARCH_SETTINGS, flag_for

TINY = ("--model", f"{MODEL_MODULE}:make", "--dataset", "digits", "--weights", "{dense}",
        "--quiet")
SEARCH = ("search", *TINY, "--fc-k", "1")
CHANNEL = ("search", *TINY, "--granularity", "channel")
BAD = "rlprune_bad_models"
HUGE = str(10**30)


def _numeric_cases() -> list[tuple]:
    """Every numeric job flag given NaN, infinities and a 31-digit integer: each is refused
    naming its flag (made from the declarations, so a new setting is covered too)."""
    hints = typing.get_type_hints(SearchConfig)
    cases = []
    for f in dataclasses.fields(SearchConfig):
        kind = hints[f.name]
        if f.name not in SEARCH_SETTINGS or kind not in (int, float) or f.name == "target":
            continue
        flag = flag_for(f.name)
        values = ("nan", "inf", "-inf", "1e300") if kind is float else (HUGE, "-" + HUGE)
        cases += [(f"{flag} {v}", [*SEARCH, f"{flag}={v}"], flag) for v in values]
    return cases


CASES = [
    *_numeric_cases(),
    ("hidden too wide", [*SEARCH, "--hidden", f"{HUGE},8"], "--hidden"),
    ("hidden too deep", [*SEARCH, "--hidden", ",".join(["8"] * 20)], "--hidden"),
    ("workers 100000", [*SEARCH, "--workers", "100000"], "--workers must be at most 256"),
    ("fc-k 1e9", [*SEARCH, "--fc-k", "1e9"], "--fc-k"),
    ("fc-k nan", [*SEARCH, "--fc-k", "nan"], "--fc-k"),
    ("s-max nan", [*SEARCH, "--s-max", "nan"], "--s-max must be a finite number"),
    # -- settings of the other granularity, which would be silently ignored -----------------
    ("budget in weight mode", [*SEARCH, "--budget", "params"],
     "--budget applies to --granularity channel only"),
    ("criterion in weight mode", [*SEARCH, "--criterion", "taylor"],
     "--criterion applies to --granularity channel only"),
    ("fc-rule in channel mode", [*CHANNEL, "--fc-rule", "agent"],
     "--fc-rule applies to --granularity weight only"),
    ("fc-k in channel mode", [*CHANNEL, "--fc-k", "2"], "--fc-k applies"),
    ("scope in channel mode", [*CHANNEL, "--scope", "agent"],
     "--scope applies to --granularity weight only"),
    ("fc-after-search in channel mode", [*CHANNEL, "--fc-after-search"],
     "--fc-after-search applies"),
    # -- a model with nothing to prune: refused before any pre-training ----------------------
    ("lone Linear under the FC rule", ["search", "--model", f"{BAD}:lone_linear", "--dataset",
                                       "digits", "--quiet"], "the agent controls no layers"),
    ("lone Linear in channel mode", ["search", "--model", f"{BAD}:lone_linear", "--dataset",
                                     "digits", "--granularity", "channel", "--quiet"],
     "no channel group"),
    # -- the other commands' numbers -----------------------------------------------------------
    ("pretrain epochs huge", ["pretrain", "--model", "lenet300", "--dataset", "digits",
                              "--epochs", HUGE, "--out", "x.pt"], "--epochs must be 1 to"),
    ("resume episodes huge", ["resume", "{interrupted}", "--episodes", HUGE],
     "--episodes must be at most"),
    ("bench seeds huge", ["bench", *TINY, "--seeds", HUGE, "--out", "b"], "--seeds"),
    ("bench first seed huge", ["bench", *TINY, "--first-seed", HUGE, "--out", "b"],
     "--first-seed"),
    ("bench target nan", ["bench", *TINY, "--targets", "0.5", "nan", "--out", "b"], "--target"),
    ("bench methods empty", ["bench", *TINY, "--methods", ",", "--out", "b"], "--methods"),
    ("export-model qat huge", ["export-model", "{finished}", "--out", "m.rlprune", "--quantize",
                               "int8", "--qat-epochs", HUGE], "--qat-epochs"),
    # -- files that do not fit -------------------------------------------------------------------
    ("export-model of a garbled deployment.json", ["export-model", "{garbled}", "--out",
                                                   "m.rlprune"], "deployment.json cannot be read"),
    ("channel policy of another architecture", ["apply", "{other_arch_policy}", *TINY[:4],
                                                "--weights", "{dense}", "--out", "o.pt2"],
     "found on another architecture"),
    # -- a service that cannot start -------------------------------------------------------------
    ("serve token-file a folder", ["serve", "--runs", "srv", "--token-file", "{folder}"],
     "--token-file"),
    ("serve token-file under a file", ["serve", "--runs", "srv", "--token-file",
                                       "{text}/token"], "--token-file"),
    ("serve upload limit negative", ["serve", "--runs", "srv", "--upload-limit-mb", "-5"],
     "--upload-limit-mb must be at least"),
    ("serve upload limit nan", ["serve", "--runs", "srv", "--upload-limit-mb", "nan"],
     "--upload-limit-mb must be a finite number"),
    ("serve port 0", ["serve", "--runs", "srv", "--port", "0"], "--port must be at least 1"),
    ("serve port 70000", ["serve", "--runs", "srv", "--port", "70000"],
     "--port must be at most 65535"),
    ("serve max-running 0", ["serve", "--runs", "srv", "--max-running", "0"], "--max-running"),
    ("serve max-running huge", ["serve", "--runs", "srv", "--max-running", HUGE],
     "--max-running"),
    ("serve data root missing", ["serve", "--runs", "srv", "--data-root", "no/such"],
     "--data-root no/such is not a folder"),
    ("serve check timeout 0", ["serve", "--runs", "srv", "--check-timeout-s", "0"],
     "--check-timeout-s"),
]


@pytest.fixture
def ctx(tmp_path_factory, tmp_path, monkeypatch):
    """The working folder with the files the cases name; the tests' user models importable."""
    assets = get_assets(tmp_path_factory)
    fleet = get_fleet(tmp_path_factory)
    monkeypatch.syspath_prepend(str(assets.models))
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    (tmp_path / "text.txt").write_text("not a model\n")
    (tmp_path / "folder").mkdir()
    finished = copy_run(fleet.run("a"), tmp_path / "finished")
    copy_run(fleet.copies / "b", tmp_path / "interrupted")
    garbled = copy_run(finished, tmp_path / "garbled")
    (garbled / "deployment.json").write_bytes(bytes(range(256)))
    paths = {"dense": str(assets.dense), "text": "text.txt", "folder": "folder",
             "finished": "finished", "interrupted": "interrupted", "garbled": "garbled",
             "other_arch_policy": str(_other_arch_policy(tmp_path_factory, assets))}
    return tmp_path, paths


def _other_arch_policy(tmp_path_factory, assets):
    """A channel policy of the tiny net, recorded as found on another architecture."""
    from support import _CACHE

    if "other_arch_policy" not in _CACHE:
        import importlib
        import sys as _sys

        import rlprune
        from rlprune.models.data import load_dataset
        from rlprune.models.train import load_weights

        _sys.path.insert(0, str(assets.models))
        model = importlib.import_module(MODEL_MODULE).make()
        load_weights(model, assets.dense)
        result = rlprune.baseline("uniform", model, load_dataset("digits"), target=0.3,
                                  granularity="channel", finetune_epochs=0)
        policy = {**result.policy, "arch_fingerprint": "sha256:" + "0" * 64}
        path = tmp_path_factory.mktemp("policies") / "other-arch.json"
        path.write_text(json.dumps(policy))
        _CACHE["other_arch_policy"] = path
    return _CACHE["other_arch_policy"]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_hostile_input_is_one_line_exit_2_and_changes_nothing(case, ctx, capsys):
    workdir, paths = ctx
    name, argv, words = case
    before = snapshot(workdir)
    code, out, err = run_main(capsys, *[arg.format(**paths) for arg in argv])
    assert_one_line_error(code, err)
    assert out == "" and words in err, err
    assert snapshot(workdir) == before  # nothing new (no run, no pre-trained model, no srv/)


def test_export_model_into_a_new_folder_makes_it(ctx, capsys):
    """`--out a/new/folder/m.rlprune` is written there (it ended in FileNotFoundError after all
    the work)."""
    workdir, paths = ctx
    code, out, err = run_main(capsys, "export-model", paths["finished"], "--out",
                              "a/new/folder/m.rlprune")
    assert code == 0, err
    assert (workdir / "a/new/folder/m.rlprune").is_file()
    assert "wrote a/new/folder/m.rlprune" in out


TERMINAL_LAUNCH = (  # the CLI as a shell in a terminal starts it: SIGINT at its default
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); sys.argv = ['rlprune'] + "
    "sys.argv[1:]; runpy.run_module('rlprune', run_name='__main__')")


SWALLOWED = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as a terminal starts it (an
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # ignored SIGINT is inherited)
import rlprune.service.cli.main as cli

def command(argv):  # set-up whose import swallows a ^C (a library's bare except), then work
    open(sys.argv[1], "w").close()  # the test's cue: ^C now
    try:
        time.sleep(30)
    except:  # noqa: E722
        pass
    time.sleep(5)
    print("ran to the end")
    return 0

cli._main = command
sys.exit(cli.main([]))
"""


def test_a_ctrl_c_that_an_import_swallows_still_stops_the_command(tmp_path):
    """A ^C noted during set-up is delivered again until something acts on it: exit 130,
    one line, and the command does not run to its end."""
    cue = tmp_path / "cue"
    proc = subprocess.Popen([sys.executable, "-c", SWALLOWED, str(cue)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not cue.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, err) == (130, "", "rlprune: interrupted\n")


@pytest.mark.parametrize("seed", range(3))
def test_ctrl_c_at_a_random_moment_of_set_up_is_one_line_and_130(seed, tmp_path):
    """^C anywhere between the interpreter's start and the first episode (imports, data,
    pre-training, the env's set-up): exit 130, one line, no traceback."""
    assets_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-c", TERMINAL_LAUNCH, "search", "--model",
                             "lenet300", "--dataset", "digits", "--fc-rule", "agent",
                             "--quiet", "--run-dir", "run"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=assets_env)
    seen = bytearray()
    reader = threading.Thread(target=lambda: seen.extend(proc.stderr.read()), daemon=True)
    reader.start()
    time.sleep(random.Random(seed).uniform(0.4, 3.0))
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    code = proc.wait(120)
    reader.join(10)
    text = seen.decode(errors="replace")
    assert "Traceback" not in text, text[-2000:]
    assert code == 130, (code, text[-800:])
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[-1].startswith("rlprune: ") or lines[-1].startswith("interrupted"), lines
