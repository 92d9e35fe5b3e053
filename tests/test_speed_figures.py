"""The search's speed figures, each a ratio of two times taken at the same moment: the overhead
ratio (a search's wall time over its own reward evaluations' durations, carried in each
episode's last info, so from worker processes too) and the proxy efficiency (the proxy and a
matmul timed alternately, round by round, before the search); and the latency figures of a
finished run, flagged where the machine was loaded or the repeats disagree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_INPUT, make_tiny, tiny_split

from rlprune.agent.config import SearchConfig
from rlprune.env.config import EnvConfig
from rlprune.env.pruning_env import PruningEnv
from rlprune.service.bench.report import merge_reports, speed_summary
from rlprune.service.jobs.lifecycle import JobRunner
from rlprune.service.jobs.measure import deployment, in_search, proxy_speed, spread
from rlprune.service.jobs.report import SPREAD_LIMIT, _deploy_rows, load_note

pytestmark = pytest.mark.usefixtures("one_thread")
SLEEP = 0.02  # simulated_eval_s: a floor under each evaluation's time, so the sums can fail


def tiny_env(**config) -> PruningEnv:
    return PruningEnv(make_tiny(0), tiny_split(64, seed=1), TINY_INPUT,
                      EnvConfig(target=0.8, fc_k=3.0, eval_batch_size=16, **config),
                      calibration=tiny_split(256, seed=2))


def tiny_config(**settings) -> SearchConfig:
    return SearchConfig(**{"model": "tiny", "dataset": "tiny", "fc_k": 1.0, "target": 0.5,
                           "episodes": 6, "warmup": 2, "hidden": (16, 16), "batch_size": 4,
                           "finetune_epochs": 0, "select_top_k": 0,
                           "simulated_eval_s": SLEEP, **settings})


def test_the_env_times_each_reward_evaluation_and_keeps_the_sum():
    env = tiny_env(simulated_eval_s=SLEEP)
    seconds = []
    for episode in range(3):
        env.reset(seed=episode)
        infos = [env.step(np.array([0.0], np.float32))[4] for _ in env.agent_layers]
        assert all("eval_s" not in info for info in infos[:-1])  # only the last step scores
        seconds.append(infos[-1]["eval_s"])
    assert all(s >= SLEEP for s in seconds)  # the evaluation (here with its sleep) is inside
    assert env.evals == 3 and env.evals_s == pytest.approx(sum(seconds))
    env.proxy_score()  # a score outside an episode (the speed measurement) is not counted
    assert env.evals == 3


def test_a_search_records_its_evaluations_against_its_own_wall_time(tiny_dense, tmp_path):
    runner = JobRunner(tiny_config(), tiny_dense)
    job = runner.create(tmp_path / "run")
    with job:
        result = runner.run(job)
    sp, search_s = result.proxy_speed, result.timings["search"]
    assert sp["evals"] == 6 == runner.env.evals
    assert 6 * SLEEP <= sp["evals_s"] < search_s
    assert sp["evals_s"] == pytest.approx(runner.env.evals_s)  # the episodes' infos, summed
    assert sp["overhead_ratio"] == pytest.approx(search_s / sp["evals_s"])
    report = (job.path / "report.md").read_text()
    assert f"The search's 6 evaluations took {sp['evals_s']:.1f} s" in report
    assert f"{sp['overhead_ratio']:.2f}x that (overhead ratio)" in report


@pytest.mark.parametrize("backend", ["processes", "ray"])
def test_workers_carry_their_evaluation_times_back(tiny_dense, backend, request):
    address = None
    if backend == "ray":
        request.getfixturevalue("ray_cluster")  # the tests' local Ray instance
        address = "auto"
    runner = JobRunner(tiny_config(workers=2, episodes=4, ray_address=address), tiny_dense)
    result = runner.run()
    sp = result.proxy_speed
    assert sp["evals"] == 4 and runner.env.evals == 0  # the workers' infos: not its own env
    assert 4 * SLEEP <= sp["evals_s"]
    assert sp["overhead_ratio"] == pytest.approx(result.timings["search"] / sp["evals_s"])


def test_in_search_without_evaluations_has_no_ratio():
    assert in_search(3.0, []) == {"evals": 0, "evals_s": 0.0, "overhead_ratio": None}
    assert in_search(3.0, [0.5, 1.0]) == {"evals": 2, "evals_s": 1.5, "overhead_ratio": 2.0}


def test_speed_summary_takes_the_overhead_ratio_from_the_searches_own_sums():
    # proxy_eval_s (timed before each search) is far off: the in-search sums decide
    new = [{"episodes": 10, "search_s": 15.0, "proxy_eval_s": 9.0, "evals": 10, "evals_s": 12.0},
           {"episodes": 30, "search_s": 45.0, "proxy_eval_s": 9.0, "evals": 30, "evals_s": 30.0}]
    speed = speed_summary(new)
    assert speed == pytest.approx({"episode_s": 1.5, "proxy_eval_s": 42 / 40,
                                   "overhead_ratio": 60 / 42})
    # an older record (no in-search sums) counts its episodes x its evaluation timed before
    mixed = speed_summary([new[0], {"episodes": 20, "search_s": 30.0, "proxy_eval_s": 1.0}])
    assert mixed["overhead_ratio"] == pytest.approx(45 / 32)
    # a resumed search: its wall time and evaluations are this run's, not all its episodes
    resumed = speed_summary([{"episodes": 40, "search_s": 10.0, "proxy_eval_s": 1.0,
                              "evals": 10, "evals_s": 8.0}])
    assert resumed["episode_s"] == 1.0 and resumed["overhead_ratio"] == 1.25
    assert speed_summary([{**new[0], "evals": 0, "evals_s": 0.0}])["overhead_ratio"] is None


def test_a_merged_bench_keeps_its_part_s_in_search_ratio():
    speed = speed_summary([{"episodes": 10, "search_s": 15.0, "proxy_eval_s": 9.0,
                            "evals": 10, "evals_s": 12.0}])
    row = {"method": "ddpg", "target": 0.9, "seed": 0, "test_accuracy": 0.9, "sparsity": 0.9}
    part = {"model": "m", "dense_test_accuracy": 0.98, "episodes": 10, "speed": speed,
            "results": [row]}
    merged = merge_reports([("a", part)])
    assert merged["speed"]["overhead_ratio"] == pytest.approx(15 / 12)


def test_proxy_speed_times_rounds_within_its_budget():
    env = tiny_env()
    least = proxy_speed(env, repeats=5, budget_s=0.0, least=2)
    assert least["rounds"] == 2
    assert proxy_speed(env, repeats=4, budget_s=60.0, least=2)["rounds"] == 4
    # the reported round's own figures: its efficiency is its GFLOP/s over its matmul's
    assert least["proxy_efficiency"] == pytest.approx(least["proxy_gflops"]
                                                      / least["matmul_gflops"])
    assert least["proxy_gflops"] == pytest.approx(env.proxy_flops() / least["proxy_eval_s"]
                                                  / 1e9)



# -- latency figures say when they were taken on a loaded machine ----------------------------
QUIET_MACHINE = {"load_1min": 0.4, "cpus": 2, "spread": {"1": 0.12, "32": 0.08}}
DEPLOY = {"size_mb": {"dense": 1.0, "pruned": 1.0},
          "latency_ms": {"batch1": {"dense": 124.0, "pruned": 120.0, "speedup": 124 / 120},
                         "batch32": {"dense": 900.0, "pruned": 450.0, "speedup": 2.0}}}


def _latency_rows(conditions: dict | None) -> dict[str, str]:
    deploy = {**DEPLOY, **({"conditions": conditions} if conditions else {})}
    return {k: v for k, v in _deploy_rows(deploy) if "latency" in k}


@pytest.mark.parametrize(("conditions", "flagged"), [
    (QUIET_MACHINE, {}),
    (None, {}),  # a run folder from before the conditions were recorded
    ({**QUIET_MACHINE, "load_1min": 3.1},
     {"1": "measured under load (load 3.1 on 2 cores): not representative",
      "32": "measured under load (load 3.1 on 2 cores): not representative"}),
    ({**QUIET_MACHINE, "spread": {"1": 0.85, "32": 0.08}},
     {"1": "repeats spread 85% (p10 to p90): not representative"}),
])
def test_a_latency_row_says_when_its_figures_are_not_representative(conditions, flagged):
    rows = _latency_rows(conditions)
    for batch in ("1", "32"):
        row = rows[f"PyTorch CPU latency, batch {batch} (ms, median)"]
        figures = "124.00 → 120.00 (1.03x)" if batch == "1" else "900.00 → 450.00 (2.00x)"
        assert row == (f"{figures}; {flagged[batch]}" if batch in flagged else figures)
    assert load_note({**QUIET_MACHINE, "load_1min": 2.0}) is None  # at the core count: fine
    assert load_note({**QUIET_MACHINE, "spread": {"1": SPREAD_LIMIT}}) is None


def test_what_other_processes_did_while_timing_outweighs_the_load_average():
    """The load average counts the job's own work (a fine-tune on every core just before the
    timing): where the other processes' CPU time was recorded, it decides."""
    own_load = {**QUIET_MACHINE, "load_1min": 2.1, "others_cores": 0.1}
    assert load_note(own_load) is None
    busy = {**QUIET_MACHINE, "load_1min": 1.1, "others_cores": 1.06}
    assert load_note(busy) == ("measured while other processes kept 1.1 of 2 cores busy: not "
                               "representative")


def test_a_busy_loop_beside_the_timing_is_seen():
    import subprocess
    import sys

    from rlprune.service.jobs.measure import interleaved_ms

    def runner(x):
        return float(x.sum())

    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        loaded: dict = {}
        interleaved_ms({"sum": runner}, (1, 8, 8), (1,), rounds=10**9, conditions=loaded,
                       budget_s=1.5)
    finally:
        loop.kill()
        loop.wait()
    # the loop shares the two cores with this process: well over half a core of its own
    assert loaded["others_cores"] > 0.5
    assert load_note(loaded).startswith("measured while other processes kept")


def test_the_onnx_check_row_is_flagged_by_its_own_conditions():
    check = {"batch": 32, "dense_ms": 10.0, "pruned_ms": 5.0, "speedup": 2.0,
             "estimated_speedup": 1.9, "error": -0.05,
             "conditions": {"load_1min": 5.0, "cpus": 4, "spread": {"32": 0.1}}}
    rows = dict(_deploy_rows({**DEPLOY, "conditions": QUIET_MACHINE, "latency_budget": check}))
    assert rows["ONNX Runtime latency, batch 32 (ms, median)"].endswith(
        "-5.0%); measured under load (load 5.0 on 4 cores): not representative")
    assert "load" not in rows["PyTorch CPU latency, batch 32 (ms, median)"]


def test_a_deployment_measurement_records_the_load_and_the_spread():
    torch.manual_seed(0)
    dense, pruned = (torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, n))
                     for n in (8, 4))
    conditions = deployment(dense, pruned, (1, 4, 4))["conditions"]
    assert conditions["cpus"] >= 1 and conditions["load_1min"] >= 0.0
    assert set(conditions["spread"]) == {"1", "32"}
    assert all(0.0 <= s < 1e6 for s in conditions["spread"].values())


def test_spread_is_the_p10_to_p90_range_over_the_median():
    assert spread([1.0] * 9) == 0.0
    assert spread([float(x) for x in range(1, 12)]) == pytest.approx((10.0 - 2.0) / 6.0)


@pytest.mark.parametrize("conditions, flagged", [
    ({"load_1min": 3.1, "cpus": 2, "spread": {"1": 0.1, "32": 0.1}}, True),
    ({"load_1min": 0.4, "cpus": 2, "spread": {"1": 0.1, "32": 0.1}}, False),
])
def test_export_models_table_says_when_its_latencies_were_measured_under_load(conditions,
                                                                               flagged):
    from pathlib import Path

    from rlprune.service.jobs.artifacts import Exported, table

    def row(variant: str, ms: float) -> dict:
        return {"variant": variant, "size_mb": 1.0, "test_accuracy": 0.9,
                "latency_ms": {"pytorch": {"1": ms, "32": 10 * ms}}}

    out = Exported(Path("m.rlprune"), [row("dense fp32", 2.0), row("pruned fp32", 1.0)],
                   conditions=conditions)
    text = table(out)
    assert "runs 2.00x the dense model's speed" in text
    assert ("Latencies measured under load (load 3.1 on 2 cores)" in text) is flagged
