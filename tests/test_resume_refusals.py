"""`rlprune resume` refusals: one line on stderr, exit code 2, and the run folder untouched.

The runs come from the shared fleet (support.fleet.Fleet); each test works on its own copy
of an interrupted run (b as it was right after SIGKILL: status "running", checkpoints up to
episode 6 or later) or of the finished run a.
"""

from __future__ import annotations

import json

import pytest
from support import (
    OTHER_MODULE,
    assert_one_line_error,
    copy_run,
    read_json,
    run_main,
    snapshot,
)

from rlprune.service.jobs.run_folder import Job


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def interrupted(fleet, tmp_path, workdir):
    """A private copy of run b as it was after SIGKILL."""
    return copy_run(fleet.copies / "b", tmp_path / "b")


def refuse(capsys, run, *argv: str) -> str:
    """Resume `run`; it must be refused without changing a thing in it. The error line."""
    before = snapshot(run)
    code, out, err = run_main(capsys, "resume", str(run), "--quiet", *argv)
    assert_one_line_error(code, err)
    assert out == ""
    assert snapshot(run) == before
    return err


def test_resume_refuses_a_finished_run(fleet, capsys, tmp_path, workdir):
    run = copy_run(fleet.run("a"), tmp_path / "a")
    err = refuse(capsys, run)
    assert "finished" in err
    assert list(workdir.iterdir()) == []


def test_resume_refuses_a_run_another_process_holds(fleet):
    """A process tried to resume a copy of b while the test process held its lock."""
    done = fleet.done["held"]
    err = assert_one_line_error(done.returncode, done.stderr)
    assert "already running" in err
    assert done.stdout == ""
    assert fleet.seen["held_unchanged"]


def test_resume_refuses_a_run_whose_lock_is_held(capsys, interrupted):
    job = Job.open(interrupted)
    assert job.status()["state"] == "interrupted"
    job.acquire()
    try:
        assert Job.open(interrupted).status()["state"] == "running"
        err = refuse(capsys, interrupted)
        assert "already running" in err
    finally:
        job.release()
    assert Job.open(interrupted).status()["state"] == "interrupted"


def edit_config(run, **changes) -> None:
    path = run / "config.json"
    config = read_json(path)
    assert set(changes) <= set(config)
    config.update(changes)
    path.write_text(json.dumps(config, indent=2) + "\n")


def test_resume_refuses_another_target(capsys, interrupted):
    edit_config(interrupted, target=0.6)
    err = refuse(capsys, interrupted)
    assert "target" in err and "does not match" in err


def test_resume_refuses_another_scope(capsys, interrupted):
    edit_config(interrupted, scope="agent")
    err = refuse(capsys, interrupted)
    assert "scope" in err


def test_resume_refuses_another_model(fleet, capsys, interrupted):
    edit_config(interrupted, model=f"{OTHER_MODULE}:make",
                weights=str(fleet.assets.other_dense))
    err = refuse(capsys, interrupted)
    assert "does not match" in err
    assert "model" in err and "layers" in err


def test_resume_refuses_weights_that_do_not_fit(fleet, capsys, interrupted):
    edit_config(interrupted, weights=str(fleet.assets.other_dense))
    err = refuse(capsys, interrupted)
    assert "does not fit" in err and "c1.weight" in err


def test_resume_refuses_when_no_checkpoint_loads(capsys, interrupted):
    """Every checkpoint damaged: nothing to continue from, and nothing is thrown away (a
    resume with one intact checkpoint left falls back to it: tests/test_damaged_runs.py)."""
    folders = sorted(p for p in (interrupted / "checkpoints").iterdir() if p.is_dir())
    assert len(folders) >= 2
    for folder in folders:
        (folder / "state.pt").write_bytes(b"not a checkpoint")
    err = refuse(capsys, interrupted)
    assert all(folder.name in err for folder in folders)
    assert "to start its search over, move" in err


def test_resume_refuses_zero_episodes(capsys, interrupted):
    err = refuse(capsys, interrupted, "--episodes", "0")
    assert "--episodes" in err


@pytest.mark.parametrize("name", ["nope", "runs/nope"])
def test_resume_refuses_a_run_that_does_not_exist(capsys, workdir, name):
    code, out, err = run_main(capsys, "resume", name)
    assert "no run at" in assert_one_line_error(code, err)
    assert list(workdir.iterdir()) == []


def test_resume_refuses_a_folder_that_is_not_a_run(capsys, workdir):
    (workdir / "stuff").mkdir()
    (workdir / "stuff" / "notes.txt").write_text("x")
    before = snapshot(workdir)
    code, _, err = run_main(capsys, "resume", "stuff")
    assert "no run at" in assert_one_line_error(code, err)
    assert snapshot(workdir) == before


def test_status_of_a_run_that_does_not_exist(capsys, workdir):
    code, _, err = run_main(capsys, "status", "nope")
    assert "no run at" in assert_one_line_error(code, err)
    assert list(workdir.iterdir()) == []
