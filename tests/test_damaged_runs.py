"""Damaged run folders: every file rlprune reads from a run is checked on load.

Each case damages one file of an interrupted run (b, right after its SIGKILL) beside a healthy
finished run (a), then runs list, status, export and resume. The promise: `list` shows every
run (the damaged one as `damaged`, with the reason) and exits 0; any other command either
works or says one line and exits 2, without a traceback, and nothing is written or
overwritten -- except a resume that falls back to an intact checkpoint, which then finishes
the run exactly as it would have.
"""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import copy_run, read_json, run_main, snapshot

from rlprune.service.jobs.checkpoint_store import CheckpointStore


@pytest.fixture
def runs(fleet, tmp_path, monkeypatch):
    """runs/a (finished) and runs/b (interrupted), the current folder their parent."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(fleet.assets.models))
    copy_run(fleet.run("a"), tmp_path / "runs" / "a")
    copy_run(fleet.copies / "b", tmp_path / "runs" / "b")
    return tmp_path / "runs"


def _checkpoints(run):
    return CheckpointStore(run / "checkpoints").saved()


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _replace_with_folder(path):
    path.unlink()
    path.mkdir()


# name -> what it does to run b (before: status "running" with no lock, two checkpoints)
STATE = {
    "status truncated": lambda b: _truncate(b / "status.json"),
    "status empty": lambda b: (b / "status.json").write_text(""),
    "status a list": lambda b: (b / "status.json").write_text("[]"),
    "status binary": lambda b: (b / "status.json").write_bytes(bytes(range(256))),
    "status null": lambda b: (b / "status.json").write_text("null"),
    "status unknown state": lambda b: (b / "status.json").write_text('{"state": "exploded"}'),
    "status episodes a string": lambda b: (b / "status.json").write_text(
        '{"state": "running", "episodes_done": "many"}'),
    "status best reward a list": lambda b: (b / "status.json").write_text(
        '{"state": "interrupted", "best_reward": [1]}'),
    "status a folder": lambda b: _replace_with_folder(b / "status.json"),
    "lock a folder": lambda b: ((b / ".lock").unlink(missing_ok=True), (b / ".lock").mkdir()),
    "config truncated": lambda b: _truncate(b / "config.json"),
    "config empty": lambda b: (b / "config.json").write_text(""),
    "config binary": lambda b: (b / "config.json").write_bytes(b"\xff\xfe\x00garbage"),
    "config a list": lambda b: (b / "config.json").write_text("[]"),
    "config a string for a number": lambda b: _edit_config(b, episodes="many"),
    "config a string for the target": lambda b: _edit_config(b, target="high"),
    "config a number for the model": lambda b: _edit_config(b, model=5),
    "config a target out of range": lambda b: _edit_config(b, target=7),
    "config an unknown method": lambda b: _edit_config(b, method="magic"),
    "config an unknown reward": lambda b: _edit_config(b, reward="vibes"),
    "config hidden of text": lambda b: _edit_config(b, hidden=["wide"]),
    "config weights missing": lambda b: _edit_config(b, weights=str(b / "nowhere.pt")),
    "config weights a folder": lambda b: _edit_config(b, weights=str(b)),
    "latest garbled, no intact checkpoint": lambda b: (
        (b / "checkpoints" / "latest").write_bytes(b"\x00\x01../../etc"),
        [(c / "state.pt").write_bytes(b"x") for c in _checkpoints(b)]),
    "every agent.zip truncated": lambda b: [_truncate(c / "agent.zip") for c in _checkpoints(b)],
    "every replay buffer truncated": lambda b: [_truncate(c / "replay_buffer.pkl")
                                                for c in _checkpoints(b)],
    "every state.pt empty": lambda b: [(c / "state.pt").write_bytes(b"")
                                       for c in _checkpoints(b)],
    "every agent.zip missing": lambda b: [(c / "agent.zip").unlink() for c in _checkpoints(b)],
}


def _edit_config(run, **changes):
    config = read_json(run / "config.json")
    config.update(changes)
    (run / "config.json").write_text(json.dumps(config))


def _one_line(code, out, err, allowed=(0, 2)):
    assert code in allowed, (code, err)
    assert "Traceback" not in err and "Traceback" not in out
    if code == 2:
        assert err.startswith("rlprune: error:") and err.count("\n") == 1, repr(err)
        assert out == ""


@pytest.mark.parametrize("case", sorted(STATE))
def test_a_damaged_run_keeps_the_promise(case, runs, capsys):
    b = runs / "b"
    STATE[case](b)
    healthy = snapshot(runs / "a")
    code, out, err = run_main(capsys, "list")
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert rows["a"].split()[1] == "finished"  # the healthy run beside it is listed
    assert "b" in rows
    damaged_status = case.startswith(("status", "lock"))
    if damaged_status:
        assert rows["b"].split()[1] == "damaged" and ("status.json" in rows["b"]
                                                      or ".lock" in rows["b"]), rows["b"]
    before = snapshot(runs)
    for argv in (["status", "runs/b"], ["export", "runs/b"], ["resume", "runs/b", "--quiet"]):
        code, out, err = run_main(capsys, *argv)
        _one_line(code, out, err, allowed=(2,) if argv[0] == "resume" else (0, 2))
        if argv[0] != "export" and damaged_status:
            assert "status.json" in err or ".lock" in err, err
        if case.startswith("config") and argv[0] == "resume" and "weights" not in case:
            assert "config.json" in err, err
        assert snapshot(runs) == before, argv
    assert snapshot(runs / "a") == healthy


@pytest.mark.parametrize("damage", ["state.pt", "agent.zip", "replay_buffer.pkl", "latest"])
def test_resume_falls_back_to_the_newest_checkpoint_that_loads(damage, fleet, runs, capsys):
    """The newest checkpoint damaged (or `latest` garbled): resume says so, continues from the
    one before (kept, never deleted) and finishes with the uninterrupted run's result."""
    b = runs / "b"
    older, newest = _checkpoints(b)[-2:]
    if damage == "latest":
        (b / "checkpoints" / "latest").write_text("ep99garbage\n")
        expected_from = newest  # every folder is intact: the newest one is used
    else:
        _truncate(newest / damage)
        expected_from = older
    code, out, err = run_main(capsys, "resume", "runs/b", "--quiet")
    assert code == 0, err
    if damage != "latest":
        assert f"checkpoint {newest.name} (" in err and "skipped (kept)" in err
    assert f"resuming runs/b from {expected_from.name}" in err
    assert read_json(b / "status.json")["state"] == "finished"
    ours, theirs = read_json(b / "policy.json"), read_json(fleet.run("a") / "policy.json")
    assert ours["layers"] == theirs["layers"] and ours["search"] == theirs["search"]


@settings(max_examples=25, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["status.json", "config.json"]),
       value=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                          lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.sampled_from(
                              ["state", "episodes_done", "best_reward", "method", "model",
                               "target", "episodes", "weights", "hidden", "fc_k"]), inner,
                              max_size=4), max_leaves=8))
def test_any_json_in_a_run_file_is_listed_or_refused(name, value, fleet, tmp_path_factory,
                                                     capsys, monkeypatch):
    root = tmp_path_factory.mktemp("fuzz")
    monkeypatch.chdir(root)
    run = copy_run(fleet.copies / "b", root / "runs" / "b")
    shutil.rmtree(run / "checkpoints")  # a resume that gets past the files starts no work
    (run / "checkpoints").mkdir()
    (run / name).write_text(json.dumps(value))
    code, out, err = run_main(capsys, "list")
    assert code == 0, err
    before = snapshot(root)
    for argv in (["status", "runs/b"], ["export", "runs/b"]):
        code, out, err = run_main(capsys, *argv)
        _one_line(code, out, err)
    assert snapshot(root) == before
