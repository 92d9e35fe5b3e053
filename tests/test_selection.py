"""The selection stage: the search's top allocations and the seed policies compete by val
accuracy after a short masked fine-tune (successive halving); `test` is never read; a run
killed during selection and resumed makes the same pick."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.selection_job import CONFIG, selection_runner

from rlprune.agent.config import SearchConfig
from rlprune.env.selection import Candidate, successive_halving

SCRIPT = Path(__file__).parent / "support" / "selection_job.py"


def test_successive_halving_picks_the_recovered_best_not_the_proxys_best():
    """Hand-built: `a` has the best search reward but recovers worst; `d` recovers best once
    fine-tuned longer. Each rung keeps the better half and doubles the steps."""
    recovered = {"a": [0.50, 0.52], "b": [0.70, 0.71, 0.72], "c": [0.60, 0.61],
                 "d": [0.69, 0.74, 0.80]}
    pool = [Candidate(name, {"l": i / 10}, reward=1.0 - i / 10)
            for i, name in enumerate("abcd")]
    asked = []

    def score(candidate: Candidate, steps: int) -> tuple[float, float]:
        asked.append((candidate.name, steps))
        rung = len(candidate.scores)
        return recovered[candidate.name][rung], 1.0

    chosen = successive_halving(pool, score, first_steps=10)
    assert chosen.name == "d"
    assert asked == [("a", 10), ("b", 10), ("c", 10), ("d", 10), ("b", 20), ("d", 20)]
    again = [Candidate(c.name, c.sparsities, c.reward, scores=list(c.scores)) for c in pool]
    asked.clear()
    assert successive_halving(again, score, first_steps=10).name == "d"
    assert asked == []  # every score was there already (a resumed selection)


def test_after_the_last_rung_the_best_so_far_is_kept():
    """`rungs=1` (the default, for its cost): every candidate gets one short fine-tune and the
    best by val wins; `rungs=2` cuts to the better half once, then picks from the two."""
    recovered = {"a": [0.50, 0.90], "b": [0.70, 0.71], "c": [0.60, 0.80], "d": [0.69, 0.74]}
    pool = [Candidate(name, {"l": i / 10}) for i, name in enumerate("abcd")]

    def score(candidate: Candidate, steps: int) -> tuple[float, float]:
        return recovered[candidate.name][len(candidate.scores)], 1.0

    assert successive_halving(pool, score, 10, rungs=1).name == "b"
    assert [len(c.scores) for c in pool] == [1, 1, 1, 1]
    fresh = [Candidate(c.name, c.sparsities) for c in pool]
    assert successive_halving(fresh, score, 10, rungs=2).name == "d"  # 0.74 > 0.71
    assert [len(c.scores) for c in fresh] == [1, 2, 1, 2]


def test_equal_scores_keep_the_earlier_candidate():
    pool = [Candidate(n, {"l": i}) for i, n in enumerate("xyz")]
    assert successive_halving(pool, lambda c, s: (0.5, 0.3), 5).name == "x"


class Unreadable:
    """A test split that fails the moment anything reads it."""

    def __getattr__(self, name):
        raise AssertionError(f"the selection read test.{name}")

    def __len__(self):
        raise AssertionError("the selection read len(test)")


def test_a_search_with_selection_includes_the_seed_policies_and_never_reads_test(one_thread):
    from rlprune.service.jobs.selection_stage import select

    runner = selection_runner()
    runner.search.run()
    test, runner.dense.data.test = runner.dense.data.test, Unreadable()
    chosen, pool = select(runner.config, runner.dense, runner.env, "ddpg",
                          runner.search.state.top)
    runner.dense.data.test = test
    names = [c.name for c in pool]
    assert [n.split(" (")[0] for n in names[:4]] == [
        f"episode {e['episode']}" for e in runner.search.state.top[:4]]
    fresh = selection_runner().env  # the heuristics on the dense weights, not on the last
    for s in SearchConfig(**CONFIG).seed_policies_for():  # episode's masked ones
        wanted = fresh.sparsities(fresh.baseline_counts(s))
        assert any(f"seed {s}" in c.name and c.sparsities == wanted for c in pool), s
    final = max(len(c.scores) for c in pool)
    finalists = [c for c in pool if len(c.scores) == final]
    assert chosen in finalists and len(finalists) == 2
    best = min(finalists, key=lambda c: (c.last(), pool.index(c)))
    assert chosen is best
    assert [s["steps"] for s in chosen.scores] == [4 * 2**i for i in range(final)]


def test_the_pick_is_the_policy_and_the_report_lists_the_candidates(tmp_path, one_thread):
    runner = selection_runner()
    job = runner.create(tmp_path / "run")
    with job:
        result = runner.run(job)
    selection = result.policy["search"]["selection"]
    assert selection["chosen"] in [c["name"] for c in selection["candidates"]]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "selected by recovered val accuracy" in report and "(selected)" in report
    assert "selection" in result.timings


def test_sigkill_during_selection_then_resume_makes_the_same_pick(tmp_path, one_thread):
    from conftest import make_tiny_dense

    from rlprune.service.jobs.resume import open_resume

    uninterrupted = selection_runner()
    reference = uninterrupted.run().policy["search"]["selection"]
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(run)])
    deadline = time.monotonic() + 120
    saved = run / "selection.json"
    while time.monotonic() < deadline and proc.poll() is None:
        if saved.is_file() and json.loads(saved.read_text())["candidates"][1]["scores"]:
            break  # two candidates scored: kill it mid-selection
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    kept = json.loads(saved.read_text())["candidates"]
    assert any(not c["scores"] for c in kept), "the selection had already finished"
    found = open_resume(run, lambda c: make_tiny_dense())
    with found.job:
        result = found.runner.run(found.job, found.checkpoint)
    assert result.policy["search"]["selection"] == reference
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


@pytest.mark.parametrize("k", [0, 65])
def test_select_top_k_limits(k):
    from rlprune.models.errors import UserError

    config = SearchConfig(select_top_k=k)
    if k == 0:
        config.validate()
    else:
        with pytest.raises(UserError, match="select_top_k must be at most 64"):
            config.validate()
