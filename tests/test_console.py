"""What a job shows while it runs: on a terminal, a line per stage and a tqdm bar; in a pipe or
a log file, plain lines (a line per stage, one per tenth of its steps), never a carriage
return; nothing with --quiet. The service's worker log gets the same plain lines."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios

import pytest
from support import cli_command, finish, get_assets

from rlprune.service.cli.console import Progress
from rlprune.service.http.worker import LogLines
from rlprune.service.jobs.events import STAGES, Event, line_due, plain_line

EPISODES = 20


def _episode(n: int, total: int = EPISODES) -> Event:
    return Event("episode", episode=n, episodes=total, reward=-0.5 - n / 100,
                 best_reward=-0.4)


def _job(episodes: int = EPISODES, epochs: int = 3) -> list[Event]:
    """The events of a search job as the lifecycle sends them."""
    events = [Event("state", state="running"),
              Event("stage", stage="search", steps=episodes, message="searching",
                    accuracy={"dense": 0.98})]
    events += [_episode(n, episodes) for n in range(1, episodes + 1)]
    events += [Event("stage", stage="selection", steps=4, message="selecting")]
    events += [Event("selection_step", step=n, steps=4) for n in range(1, 5)]
    events += [Event("stage", stage="finetune", steps=epochs, message="fine-tuning")]
    events += [Event("finetune_epoch", epoch=n, epochs=epochs, loss=1.0 / n)
               for n in range(1, epochs + 1)]
    events += [Event("stage", stage="export", steps=1, message="measuring",
                     accuracy={"dense": 0.98, "pruned": 0.5, "finetuned": 0.97}),
               Event("state", state="finished")]
    return events


@pytest.mark.parametrize(("total", "expected"), [
    (400, [40, 80, 120, 160, 200, 240, 280, 320, 360, 400]),
    (20, [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]), (3, [1, 2, 3]), (13, [2, 3, 4, 6, 7, 8, 10,
                                                                     11, 12, 13])])
def test_a_stage_writes_a_line_per_tenth_of_its_steps(total, expected):
    assert [n for n in range(1, total + 1) if line_due(n, total)] == expected


def test_plain_lines_name_the_stage_and_its_figures():
    assert plain_line(Event("stage", stage="export", steps=1, message="measuring",
                            accuracy={"dense": 0.981, "finetuned": 0.9733})) == (
        "export: measuring (test accuracy: dense 98.10%, fine-tuned 97.33%)")
    assert plain_line(_episode(10)) == "search: episode 10/20, reward -0.6000, best -0.4000"
    assert plain_line(_episode(9)) is None  # between two tenths
    assert plain_line(Event("pretrain_epoch", epoch=2, epochs=8, loss=0.25)) == (
        "pretrain: epoch 2/8, loss 0.2500")
    assert plain_line(Event("state", state="running")) is None
    assert plain_line(Event("state", state="failed")) == "job failed"


def test_a_pipe_gets_plain_lines_and_quiet_gets_nothing(capsys):
    progress = Progress(terminal=False)
    for event in _job():
        progress(event)
    progress.close()
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and "\r" not in err
    assert lines[0] == "search: searching (test accuracy: dense 98.00%)"
    named = [line.split(": ")[0] for line in lines]
    assert list(dict.fromkeys(named)) == ["search", "selection", "finetune", "export"]
    assert len(lines) == 4 + 10 + 4 + 3  # stages, tenths of the search, candidates, epochs

    quiet = Progress(quiet=True, terminal=False)
    for event in _job():
        quiet(event)
    assert capsys.readouterr() == ("", "")


def test_a_bench_cell_and_the_worker_log_say_whose_lines_they_are(capsys):
    cell, log = Progress("uniform-0.5-seed0", terminal=False), LogLines("uniform-0.5-seed0")
    for event in _job():
        cell(event)
    cell_lines = capsys.readouterr().err.splitlines()
    for event in _job():
        log(event)
    log_lines = capsys.readouterr().err.splitlines()
    assert all(line.startswith("[uniform-0.5-seed0] ") for line in cell_lines + log_lines)
    assert log_lines == [*cell_lines, "[uniform-0.5-seed0] job finished"]


BARS = f"""
from rlprune.service.cli.console import Progress
from rlprune.service.jobs.events import Event
progress = Progress()
progress(Event("stage", stage="search", steps={EPISODES}, message="searching"))
for n in range(1, {EPISODES} + 1):
    progress(Event("episode", episode=n, episodes={EPISODES}, reward=-1.0, best_reward=-1.0))
progress(Event("stage", stage="export", steps=1, message="measuring"))
progress.close()
"""


def test_a_terminal_gets_a_bar_and_each_stage_message_once():
    """stderr on a pseudo-terminal: tqdm redraws its bar in place; the messages stay."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # else 0 wide
    proc = subprocess.Popen([sys.executable, "-c", BARS], stderr=child, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    os.close(child)
    seen = b""
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        try:
            chunk = os.read(main, 4096) if ready else b""
        except OSError:  # the child closed its end
            chunk = b""
        if not chunk:
            break
        seen += chunk
    os.close(main)
    assert proc.wait(60) == 0, seen.decode()[-2000:]
    text = seen.decode()
    assert "\r" in text and f"{EPISODES}/{EPISODES}" in text and "%|" in text, text
    assert text.count("search: searching") == 1 and text.count("export: measuring") == 1


def test_a_piped_search_writes_a_line_per_stage_and_no_carriage_return(tmp_path_factory,
                                                                       tmp_path):
    """A real search, stdout and stderr piped (a log): each stage it went through named on a
    line of its own, at most a line per tenth of the search's episodes, never `\\r`."""
    assets = get_assets(tmp_path_factory)
    proc = subprocess.Popen(
        cli_command("search", "--model", assets.model, "--checkpoint", str(assets.dense),
                    "--dataset", "digits", "--target", "0.5", "--fc-k", "1", "--episodes",
                    str(EPISODES), "--warmup", "3", "--finetune-epochs", "1",
                    "--select-top-k", "1", "--select-steps", "2", "--no-int8-size",
                    "--run-dir", "run"),
        cwd=tmp_path, env=assets.env(), text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    done = finish(proc)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout + done.stderr
    lines = done.stderr.splitlines()
    for stage in list(STAGES)[1:]:  # the dense model is given: nothing is pre-trained
        assert len([line for line in lines if line.startswith(f"{stage}: ")
                    and "/" not in line.split(",")[0]]) == 1, (stage, lines)
    episodes = [line for line in lines if line.startswith("search: episode ")]
    assert episodes[-1].startswith(f"search: episode {EPISODES}/{EPISODES}, reward ")
    assert len(episodes) == 10 and len(lines) <= 1 + 4 + 10 + 8 + 1, lines
    assert "test accuracy, fine-tuned" in done.stdout
