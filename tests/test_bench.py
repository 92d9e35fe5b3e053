"""`rlprune bench` on the tiny net: every method runs, baselines land on the target, files."""

import json

import pytest

from rlprune.agent.config import SearchConfig
from rlprune.models.errors import UserError
from rlprune.service.bench.report import (
    bench_table,
    merge_reports,
    paired_differences,
    speed_summary,
)
from rlprune.service.bench.runner import bench_methods, run_bench, run_one


@pytest.fixture
def dense(tiny_dense):
    return tiny_dense


def test_bench_runs_every_method_and_writes_its_files(tmp_path, dense, one_thread):
    base = SearchConfig(model="tiny", dataset="tiny", fc_k=1.0, episodes=3, warmup=1,
                        checkpoint_every=3, finetune_epochs=1, hidden=(16, 16), batch_size=4,
                        select_top_k=0)  # a bench cell's selection: test_run_folders.py
    report = run_bench(dense, base, targets=[0.5], methods=list(bench_methods("weight")), seeds=1,
                       out=tmp_path / "out", log=lambda line: None)
    on_disk = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert [r["method"] for r in on_disk["results"]] == list(bench_methods("weight"))
    # auto mapping: c3 (the largest conv layer) is last; with every layer, f1 is not
    mapping = {r["method"]: r.get("action_mapping") for r in on_disk["results"]}
    assert (mapping["ddpg"], mapping["ddpg-only"], mapping["lamp"]) == ("absolute", "feasible",
                                                                         None)
    n = 36 + 288 + 1152 + 2048 + 320
    for row in on_disk["results"]:
        assert set(row) >= {"method", "target", "seed", "test_accuracy", "sparsity"}
        assert 0.0 <= row["test_accuracy"] <= 1.0
        if row["method"] != "3sigma-only":  # the rule on every layer decides its own sparsity
            assert abs(row["sparsity"] - 0.5) <= 0.5 / n, row
    speed = on_disk["speed"]
    assert speed["episode_s"] > 0 and speed["proxy_eval_s"] > 0
    assert speed["overhead_ratio"] == pytest.approx(speed["episode_s"] / speed["proxy_eval_s"])
    assert speed["proxy_gflops"] > 0 and speed["matmul_gflops"] > 0
    assert 0 < speed["proxy_efficiency"] < 10  # each cell's ratio, averaged
    table = (tmp_path / "out" / "bench.md").read_text()
    assert "of a 2048x2048 fp32 matmul" in table
    assert all(f"| {m} |" in table for m in bench_methods("weight"))
    assert (tmp_path / "out" / "bench.png").stat().st_size > 0
    agents = {}  # the td3 cell is the search with TD3; a baseline's cell has no agent of its own
    for path in (tmp_path / "out" / "runs").glob("*/config.json"):
        saved = json.loads(path.read_text())
        agents.setdefault(saved["agent"], set()).add(path.parent.name)
    assert sum("td3" in name for name in agents["td3"]) == len(agents["td3"]) == 1


def test_overhead_ratio_is_wall_time_over_episodes_times_one_evaluation():
    speed = speed_summary([{"episodes": 10, "search_s": 15.0, "proxy_eval_s": 1.0},
                    {"episodes": 30, "search_s": 45.0, "proxy_eval_s": 1.0}])
    assert speed == {"episode_s": 1.5, "proxy_eval_s": 1.0, "overhead_ratio": 1.5}
    assert speed_summary([])["overhead_ratio"] is None
    rated = speed_summary([
        {"episodes": 10, "search_s": 15.0, "proxy_eval_s": 1.0, "proxy_gflops": 20.0,
         "matmul_gflops": 100.0, "proxy_efficiency": 0.2},
        {"episodes": 30, "search_s": 45.0, "proxy_eval_s": 1.0, "proxy_gflops": 40.0,
         "matmul_gflops": 100.0, "proxy_efficiency": 0.4}])
    assert rated["proxy_gflops"] == pytest.approx(35.0)  # weighted by episodes
    assert rated["proxy_efficiency"] == pytest.approx(0.35)


def test_unknown_method_is_refused(tmp_path, dense):
    from rlprune.models.errors import UserError

    with pytest.raises(UserError, match="unknown method"):
        run_bench(dense, SearchConfig(), targets=[0.5], methods=["magic"], seeds=1,
                  out=tmp_path / "o", log=lambda line: None)


def test_fc_rule_agent_gives_baselines_every_layer(tmp_path, dense, one_thread):
    """`--fc-rule agent`: the baselines allocate over every layer (FC included), like the search
    that controls every layer, and still land on the target."""
    config = SearchConfig(model="tiny", dataset="tiny", fc_rule="agent", target=0.7,
                          finetune_epochs=0)
    n = 36 + 288 + 1152 + 2048 + 320
    for method in ("global", "erk"):
        policy = run_one(method, config, dense, tmp_path / method, [])
        assert {layer["owner"] for layer in policy["layers"]} == {"agent"}
        assert policy["fc_rule"]["kind"] == "agent"
        assert abs(policy["achieved"]["sparsity"] - 0.7) <= 0.5 / n


def test_a_stopped_search_stops_the_bench_and_keeps_the_finished_rows(tmp_path, dense,
                                                                      one_thread, monkeypatch):
    """^C or SIGTERM during a search stops that search after its episode (it keeps a
    checkpoint) and then the whole bench; the rows already finished are written."""
    from rlprune.agent.search import Search

    boundary = Search._at_boundary

    def stop_after_two(self):
        if self.state.episode == 2:
            self.should_stop = lambda: True
        return boundary(self)

    monkeypatch.setattr(Search, "_at_boundary", stop_after_two)
    base = SearchConfig(model="tiny", dataset="tiny", fc_k=1.0, episodes=5, warmup=1,
                        checkpoint_every=5, finetune_epochs=1, hidden=(16, 16), batch_size=4)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_bench(dense, base, targets=[0.5], methods=["uniform", "ddpg", "lamp"], seeds=1,
                  out=out, log=lambda line: None)
    report = json.loads((out / "bench.json").read_text())
    assert report["interrupted"] is True
    assert [r["method"] for r in report["results"]] == ["uniform"]
    status = json.loads((out / "runs" / "ddpg-0.5-seed0" / "status.json").read_text())
    assert status["state"] == "interrupted" and status["episodes_done"] == 2
    assert not (out / "runs" / "lamp-0.5-seed0").exists()


def test_resume_keeps_finished_cells_and_continues_the_stopped_one(tmp_path, dense,
                                                                  one_thread, monkeypatch):
    """A bench stopped in its search resumes in the same folder: the finished cell is kept
    as it was, the stopped search continues from its checkpoint, the rest run; every row is
    the one an uninterrupted bench gives. Without resume the folder is refused, and a cell
    made with other settings is refused rather than overwritten."""
    from rlprune.agent.search import Search

    base = SearchConfig(model="tiny", dataset="tiny", fc_k=1.0, episodes=5, warmup=1,
                        checkpoint_every=5, finetune_epochs=1, hidden=(16, 16), batch_size=4,
                        select_top_k=0)
    quiet = {"targets": [0.5], "methods": ["uniform", "ddpg", "lamp"], "seeds": 1,
             "log": lambda line: None}
    whole = run_bench(dense, base, out=tmp_path / "whole", **quiet)
    boundary = Search._at_boundary

    def stop_after_two(self):
        if self.state.episode == 2:
            self.should_stop = lambda: True
        return boundary(self)

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(Search, "_at_boundary", stop_after_two)
        with pytest.raises(KeyboardInterrupt):
            run_bench(dense, base, out=out, **quiet)
    kept = (out / "runs" / "uniform-0.5-seed0" / "policy.json").stat().st_mtime_ns
    with pytest.raises(UserError, match=r"resume it \(`resume`\)") as info:  # CLI: --resume
        run_bench(dense, base, out=out, **quiet)
    assert info.value.setting == "out" and "resume" in info.value.others
    with pytest.raises(UserError, match="other settings"):
        run_bench(dense, SearchConfig(**{**base.__dict__, "finetune_epochs": 2}), out=out,
                  resume=True, **quiet)
    resumed = run_bench(dense, base, out=out, resume=True, **quiet)
    assert (out / "runs" / "uniform-0.5-seed0" / "policy.json").stat().st_mtime_ns == kept
    status = json.loads((out / "runs" / "ddpg-0.5-seed0" / "status.json").read_text())
    assert status["state"] == "finished" and status["episodes_done"] == 5
    assert [(r["method"], r["test_accuracy"], r["sparsity"]) for r in resumed["results"]] == [
        (r["method"], r["test_accuracy"], r["sparsity"]) for r in whole["results"]]


def test_first_seed_extends_an_earlier_bench(tmp_path, dense, one_thread):
    """`first_seed` runs the later seeds only, and each row is the one a longer bench gives."""
    base = SearchConfig(model="tiny", dataset="tiny", fc_k=1.0, episodes=3, warmup=1,
                        checkpoint_every=3, finetune_epochs=1, hidden=(16, 16), batch_size=4,
                        select_top_k=0)
    quiet = {"targets": [0.5], "methods": ["uniform", "ddpg"], "log": lambda line: None}
    whole = run_bench(dense, base, seeds=2, out=tmp_path / "whole", **quiet)
    later = run_bench(dense, base, seeds=1, first_seed=1, out=tmp_path / "later", **quiet)
    assert [(r["method"], r["seed"]) for r in later["results"]] == [("uniform", 1), ("ddpg", 1)]
    assert sorted((tmp_path / "later" / "runs").iterdir())[0].name == "ddpg-0.5-seed1"
    same = {(r["method"], r["seed"]): r["test_accuracy"] for r in whole["results"]}
    for row in later["results"]:
        assert row["test_accuracy"] == same[(row["method"], row["seed"])]


def _row(method, target, seed, acc, sparsity=None):
    return {"method": method, "target": target, "seed": seed, "test_accuracy": acc,
            "sparsity": target if sparsity is None else sparsity}


def test_paired_differences_by_hand():
    results = [_row("ddpg", 0.9, 0, 0.975), _row("ddpg", 0.9, 1, 0.970),
               _row("ddpg", 0.9, 2, 0.972), _row("erk", 0.9, 0, 0.973),
               _row("erk", 0.9, 1, 0.970), _row("erk", 0.9, 2, 0.974),
               _row("lamp", 0.9, 0, 0.960),  # one shared seed: not compared
               _row("3sigma-only", 0.9, 0, 0.1, 0.9999), _row("3sigma-only", 0.9, 1, 0.1, 0.9999)]
    pairs = paired_differences(results)
    assert set(pairs) == {("erk", 0.9)}
    p = pairs[("erk", 0.9)]
    # differences +0.002, 0, -0.002: mean 0, sample std 0.002, se 0.002 / sqrt(3)
    assert p["n"] == 3 and (p["won"], p["tied"], p["lost"]) == (1, 1, 1)
    assert p["mean"] == pytest.approx(0.0, abs=1e-12)
    assert p["se"] == pytest.approx(0.002 / 3 ** 0.5)
    assert p["verdict"] == "level"
    assert "| erk | 0.9 | +0.00 ± 0.12 | 1 / 1 / 1 | level |" in bench_table(
        {"model": "m", "dataset": "d", "dense_test_accuracy": 0.98, "results": results,
         "speed": speed_summary([])})


def test_verdict_needs_the_95_percent_t_interval_to_exclude_zero():
    def verdict(ddpg: list[float], other: list[float]) -> str:
        rows = [_row("ddpg", 0.9, s, a) for s, a in enumerate(ddpg)]
        rows += [_row("lamp", 0.9, s, a) for s, a in enumerate(other)]
        return paired_differences(rows)[("lamp", 0.9)]["verdict"]

    # differences +0.002, +0.003, +0.001: mean 0.002, se 0.000577, t(0.975, 2) = 4.303,
    # half-width 0.00248 > 0.002: level; +0.002, +0.003, +0.0025: half-width 0.00124: ahead
    assert verdict([0.972, 0.973, 0.971], [0.970] * 3) == "level"
    assert verdict([0.972, 0.973, 0.9725], [0.970] * 3) == "ahead"
    assert verdict([0.970] * 3, [0.972, 0.973, 0.9725]) == "behind"


def test_merge_reports_keys_rows_by_method_target_and_seed():
    speed = {"episode_s": 2.0, "proxy_eval_s": 1.0, "overhead_ratio": 2.0}
    first = {"model": "m", "dense_test_accuracy": 0.98, "episodes": 10, "speed": speed,
             "results": [_row("ddpg", 0.9, 0, 0.90), _row("erk", 0.9, 0, 0.91)]}
    rerun = {"model": "m", "dense_test_accuracy": 0.98, "episodes": 30,
             "speed": {"episode_s": 1.0, "proxy_eval_s": 1.0, "overhead_ratio": 1.0},
             "results": [_row("ddpg", 0.9, 0, 0.95), _row("ddpg", 0.9, 1, 0.96)]}
    merged = merge_reports([("a", first), ("b", rerun)])
    got = {(r["method"], r["seed"]): (r["test_accuracy"], r["source"]) for r in merged["results"]}
    assert got == {("ddpg", 0): (0.95, "b"), ("erk", 0): (0.91, "a"), ("ddpg", 1): (0.96, "b")}
    # 10 episodes at 2 s and 60 at 1 s: 80 s over 70 evaluations of 1 s
    assert merged["speed"]["overhead_ratio"] == pytest.approx(80 / 70)
    assert merged["merged_from"] == ["a", "b"]
    # a setting the parts differ in lists its values, not only the first part's
    assert merged["episodes"] == [10, 30] and merged["model"] == "m"
    with pytest.raises(UserError, match="another dense model"):
        merge_reports([("a", first), ("c", {**rerun, "dense_test_accuracy": 0.5})])


def test_the_search_reward_reaches_every_search_and_the_report(tmp_path, dense, one_thread):
    """A reward other than the default (`loss`) reaches the searches, so the test can fail."""
    base = SearchConfig(model="tiny", dataset="tiny", fc_k=1.0, episodes=3, warmup=1,
                        checkpoint_every=3, finetune_epochs=0, hidden=(16, 16), batch_size=4,
                        reward="acc")
    assert SearchConfig().reward_kind == "loss"  # auto, in weight mode
    report = run_bench(dense, base, targets=[0.5], methods=["ddpg"], seeds=1,
                       out=tmp_path / "out", log=lambda line: None)
    assert report["reward"] == "acc"
    run = tmp_path / "out" / "runs" / "ddpg-0.5-seed0"
    assert json.loads((run / "config.json").read_text())["reward"] == "acc"
    policy = json.loads((run / "policy.json").read_text())
    # the accuracy reward: the best reward is the kept policy's val accuracy, not -loss
    assert policy["search"]["best_reward"] == policy["accuracy"]["proxy"] > 0


def test_the_bench_command_hands_its_settings_to_the_searches(cli, workdir, one_thread):
    """`rlprune bench` end to end: the reward, episodes and fine-tune budget on the command
    line reach the search's config, and stderr counts the finished runs."""
    code, _, err = cli("pretrain", "--model", "lenet300", "--dataset", "digits", "--epochs", "1",
                       "--out", "dense.pt")
    assert code == 0, err
    code, out, err = cli("bench", "--model", "lenet300", "--dataset", "digits", "--checkpoint",
                         "dense.pt", "--fc-rule", "agent", "--targets", "0.5", "--methods",
                         "ddpg,lamp", "--seeds", "1", "--episodes", "3", "--warmup", "1",
                         "--finetune-epochs", "0", "--reward", "acc", "--select-top-k", "0",
                         "--quiet", "--out", "b")
    assert code == 0, err
    assert "[1/2] ddpg" in err and "[2/2] lamp" in err
    assert "| ddpg |" in out
    run = workdir / "b" / "runs" / "ddpg-0.5-seed0"
    config = json.loads((run / "config.json").read_text())
    assert (config["reward"], config["episodes"], config["finetune_epochs"],
            config["select_top_k"]) == ("acc", 3, 0, 0)
    policy = json.loads((run / "policy.json").read_text())
    assert policy["search"]["best_reward"] == policy["accuracy"]["proxy"] > 0
    assert policy["accuracy"]["finetuned"] == policy["accuracy"]["pruned"]  # no fine-tune
    assert json.loads((workdir / "b" / "bench.json").read_text())["reward"] == "acc"


def test_bench_merge_joins_parts_and_renames_a_part_s_method(cli, workdir):
    """`rlprune bench --merge`: a later part's row replaces an earlier one's; `PATH:OLD=NEW`
    brings only OLD's rows, as NEW, so two variants of the search stand side by side."""
    speed = {"episode_s": 2.0, "proxy_eval_s": 1.0, "overhead_ratio": 2.0}
    first = {"model": "m", "dataset": "d", "dense_test_accuracy": 0.98, "episodes": 10,
             "speed": speed, "results": [_row("ddpg", 0.9, 0, 0.90), _row("erk", 0.9, 0, 0.91),
                                         _row("ddpg", 0.9, 1, 0.92), _row("erk", 0.9, 1, 0.93)]}
    rerun = {**first, "results": [_row("ddpg", 0.9, 0, 0.95), _row("ddpg", 0.9, 1, 0.94)]}
    (workdir / "a.json").write_text(json.dumps(first))
    (workdir / "b.json").write_text(json.dumps(rerun))
    code, out, err = cli("bench", "--merge", "a.json", "b.json", "a.json:ddpg=ddpg-old",
                         "--out", "m")
    assert code == 0, err
    merged = json.loads((workdir / "m" / "bench.json").read_text())
    got = {(r["method"], r["seed"]): r["test_accuracy"] for r in merged["results"]}
    assert got == {("ddpg", 0): 0.95, ("ddpg", 1): 0.94, ("erk", 0): 0.91, ("erk", 1): 0.93,
                   ("ddpg-old", 0): 0.90, ("ddpg-old", 1): 0.92}
    assert "| ddpg-old | 0.9 |" in out and (workdir / "m" / "bench.png").is_file()
    code, _, err = cli("bench", "--merge", "a.json:ddpg", "--out", "n")
    assert code == 2 and "PATH:OLD=NEW" in err and not (workdir / "n").exists()
    code, _, err = cli("bench", "--merge", "a.json", "--out", "m")
    assert code == 2 and "not empty" in err

