"""`rlprune search` and `resume` as real processes: the run folder end to end, exact resume
after SIGKILL, a clean stop on SIGTERM, `list`/`status`, and concurrent searches.

The processes are started once per session (see support.fleet.Fleet): runs a, a2 and a3 go
uninterrupted, b is SIGKILLed mid-episode after a checkpoint and resumed, c gets SIGTERM and
is resumed. All use the same settings and seed, so every finished one must agree. a is a fresh
`python -m rlprune` process; the others are forked from a server that has the imports done.
"""

from __future__ import annotations

import re
import signal

import pytest
import torch
import yaml
from support import (
    EPISODES,
    TARGET,
    TINY_LAYERS,
    TINY_PRUNABLE,
    WARMUP,
    assert_one_line_error,
    final_state,
    latest_episode,
    read_json,
    run_main,
    run_state,
)

POLICY_KEYS = {"format", "model", "dataset", "arch_fingerprint", "method", "target", "layers",
               "fc_rule", "achieved", "accuracy", "search"}
# all parameters of the tiny net: prunable weights, biases 8+16+16+10, BatchNorm 2*(8+16)
TINY_PARAMS = TINY_PRUNABLE + 50 + 48


def policy_of(fleet, name: str) -> dict:
    return read_json(fleet.run(name) / "policy.json")


def sparsities(policy: dict) -> dict[str, float]:
    return {layer["name"]: layer["sparsity"] for layer in policy["layers"]}


# -- a search, end to end -----------------------------------------------------------------
def test_search_exits_0_and_reports(fleet):
    done = fleet.done["a"]
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "runs/a" in done.stdout and "policy.json" in done.stdout
    assert "sparsity" in done.stdout  # the result table
    # the first line names what is searched: layers, FC rule, action mapping, reward
    first = done.stderr.splitlines()[0]
    assert "3 agent layers" in first and "k=1" in first, first
    assert "absolute actions" in first and "reward loss" in first, first
    policy = read_json(fleet.run("a") / "policy.json")
    assert f"layer sparsity up to {policy['search']['s_max']:.4g}" in first, first
    assert read_json(fleet.run("a") / "config.json")["s_max"] == "auto"


def test_run_folder_config_and_status(fleet):
    run = fleet.run("a")
    config = read_json(run / "config.json")
    assert config["model"] == fleet.assets.model
    assert config["dataset"] == "digits"
    assert config["target"] == TARGET
    assert (config["episodes"], config["warmup"], config["checkpoint_every"]) == (EPISODES,
                                                                                  WARMUP, 3)
    status = read_json(run / "status.json")
    assert status["state"] == "finished"
    assert status["episodes_done"] == status["episodes"] == EPISODES
    assert status["pid"] == fleet.done["a"].pid
    assert status["best_reward"] == policy_of(fleet, "a")["search"]["best_reward"]


def test_run_folder_checkpoints_and_tensorboard(fleet):
    run = fleet.run("a")
    assert latest_episode(run) == EPISODES
    final = run / "checkpoints" / f"ep{EPISODES:06d}"
    for name in ("agent.zip", "replay_buffer.pkl", "state.pt"):
        assert (final / name).is_file() and (final / name).stat().st_size > 0
    state = final_state(run)
    assert state["search"]["episode"] == EPISODES
    assert len(state["search"]["rewards"]) == EPISODES
    events = list((run / "tb").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(events[0])).Reload().Tags()["scalars"]
    assert {"search/reward", "search/best_reward", "search/proxy_accuracy", "search/proxy_loss",
            "search/noise_sigma"} <= set(tags)


def test_policy_format(fleet):
    policy = policy_of(fleet, "a")
    assert POLICY_KEYS <= set(policy)
    assert policy["format"] == "rlprune.policy/2" and policy["granularity"] == "weight"
    assert policy["model"] == fleet.assets.model and policy["dataset"] == "digits"
    assert policy["method"] == "ddpg"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", policy["arch_fingerprint"])
    assert policy["target"] == {"sparsity": TARGET, "scope": "total"}
    assert policy["fc_rule"] == {"kind": "3sigma", "k": 1.0}
    assert [(la["name"], la["kind"], la["params"], la["owner"]) for la in policy["layers"]] == [
        ("c1", "conv", TINY_LAYERS["c1"], "agent"), ("c2", "conv", TINY_LAYERS["c2"], "agent"),
        ("c3", "conv", TINY_LAYERS["c3"], "agent"), ("f1", "fc", TINY_LAYERS["f1"], "fc-rule")]
    assert {"dense", "proxy", "pruned", "finetuned"} <= set(policy["accuracy"])
    assert {"episodes", "best_episode", "seed"} <= set(policy["search"])
    assert policy["search"]["episodes"] == EPISODES and policy["search"]["seed"] == 0
    assert policy["search"]["action_mapping"] == "absolute"  # auto: c3, the largest, is last


def test_policy_lands_on_target(fleet):
    policy = policy_of(fleet, "a")
    achieved = policy["achieved"]
    assert achieved["prunable_weights"] == TINY_PRUNABLE
    assert achieved["params_dense"] == TINY_PARAMS
    counts = []
    for layer in policy["layers"]:
        n = layer["sparsity"] * layer["params"]
        assert n == pytest.approx(round(n), abs=1e-6), layer  # whole weights
        assert 0 <= round(n) <= layer["params"]
        counts.append(round(n))
    pruned = sum(counts)
    assert abs(pruned - TARGET * TINY_PRUNABLE) <= len(counts)  # within a weight per layer
    assert achieved["sparsity"] * TINY_PRUNABLE == pytest.approx(pruned, abs=1e-6)
    assert achieved["sparsity"] == pytest.approx(TARGET, abs=len(counts) / TINY_PRUNABLE)
    assert achieved["params_nonzero"] == TINY_PARAMS - pruned
    assert 0 < achieved["flops_nonzero"] < achieved["flops_dense"]


def test_policy_fc_layer_follows_the_sigma_rule(fleet):
    """f1's sparsity is the share of dense weights with |w - mean| < 1 * std (--fc-k 1)."""
    dense = torch.load(fleet.assets.dense, weights_only=True)["state_dict"]["f1.weight"]
    w = dense.double()
    inside = ((w - w.mean()).abs() < w.std(unbiased=False)).sum().item()
    assert sparsities(policy_of(fleet, "a"))["f1"] == pytest.approx(inside / w.numel())


def test_policy_best_episode_is_the_best_reward(fleet):
    policy = policy_of(fleet, "a")
    rewards = final_state(fleet.run("a"))["search"]["rewards"]
    best = policy["search"]["best_episode"]
    assert 1 <= best <= EPISODES
    assert rewards[best - 1] == max(rewards) == policy["search"]["best_reward"]
    best_state = final_state(fleet.run("a"))["search"]["best"]
    assert policy["search"]["best_reward"] == -best_state["proxy_loss"]  # the default reward
    assert policy["accuracy"]["proxy"] == best_state["proxy_accuracy"]
    assert len(set(rewards)) > 1, "rewards do not vary: the resume checks would prove little"
    assert policy["accuracy"]["finetuned"] == policy["accuracy"]["pruned"]  # 0 epochs


def test_pruned_checkpoint_has_the_policy_sparsities(fleet):
    state = run_state(fleet.run("a"))
    for layer in policy_of(fleet, "a")["layers"]:
        weight = state[f"{layer['name']}.weight"]
        assert weight.numel() == layer["params"]
        assert int((weight == 0).sum()) == round(layer["sparsity"] * layer["params"]), layer


def test_report_references_two_plots_that_exist(fleet):
    run = fleet.run("a")
    report = (run / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(images) == 2 and len(set(images)) == 2, images
    for image in images:
        assert image.endswith(".png")
        assert (run / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "c3" in report and "f1" in report  # the per-layer table
    assert re.search(r"One proxy evaluation [\d.]+ ms: [\d.]+ GFLOP/s, [\d.]+ of a 2048x2048 "
                     r"fp32 matmul's \d+ GFLOP/s", report), report


def tensorboard_rewards(run) -> dict[int, float]:
    """search/reward per episode, from every event file under RUN/tb (later files win)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    rewards = {}
    for path in sorted((run / "tb").rglob("events.out.tfevents.*"),
                       key=lambda p: p.stat().st_mtime_ns):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "search/reward":
                    rewards[event.step] = (list(value.tensor.float_val) or [value.simple_value])[0]
    return rewards


def test_tensorboard_has_the_reward_of_every_episode(fleet):
    rewards = final_state(fleet.run("a"))["search"]["rewards"]
    logged = tensorboard_rewards(fleet.run("a"))
    assert sorted(logged) == list(range(1, EPISODES + 1))
    assert [logged[e] for e in sorted(logged)] == pytest.approx(rewards, abs=1e-6)
    # the killed-and-resumed run logs into the same place and covers every episode too
    assert tensorboard_rewards(fleet.run("b")) == logged


# -- exact resume after SIGKILL -----------------------------------------------------------
def test_sigkilled_run_shows_as_interrupted(fleet):
    latest, done = fleet.seen["b_killed_at"]
    assert latest >= 6 and done >= 7
    assert fleet.done["b"].returncode == -signal.SIGKILL
    raw = read_json(fleet.copies / "b" / "status.json")
    assert raw["state"] == "running"  # what the dead process last wrote ...
    assert fleet.seen["b_status"]["state"] == "interrupted"  # ... is not what status says
    code, out, err = fleet.seen["status_b"]
    assert code == 0, err
    assert yaml.safe_load(out)["state"] == "interrupted"
    assert not (fleet.copies / "b" / "policy.json").exists()


def test_status_and_list_do_not_touch_the_run(fleet):
    assert fleet.seen["b_unchanged_by_list"]


def test_resume_after_sigkill_gives_the_uninterrupted_result(fleet):
    done = fleet.done["b_resume"]
    assert done.returncode == 0, done.stderr
    resumed_from = re.search(r"resuming \S+ from ep(\d+)", done.stderr)
    assert resumed_from, done.stderr
    assert 6 <= int(resumed_from.group(1)) < EPISODES
    a, b = policy_of(fleet, "a"), policy_of(fleet, "b")
    assert sparsities(b) == sparsities(a)
    for key in ("episodes", "best_episode", "best_reward"):
        assert b["search"][key] == a["search"][key], key
    sa, sb = final_state(fleet.run("a"))["search"], final_state(fleet.run("b"))["search"]
    assert sb["rewards"] == sa["rewards"]
    assert sb["proxy"] == sa["proxy"]
    assert read_json(fleet.run("b") / "status.json")["state"] == "finished"


def test_resume_without_any_checkpoint_starts_over_and_gives_the_same_result(fleet):
    done = fleet.done["b0_resume"]
    assert done.returncode == 0, done.stderr
    assert "no checkpoint" in done.stderr
    run = fleet.copies / "b0"
    assert read_json(run / "status.json")["state"] == "finished"
    assert sparsities(read_json(run / "policy.json")) == sparsities(policy_of(fleet, "a"))
    assert final_state(run)["search"]["rewards"] == \
        final_state(fleet.run("a"))["search"]["rewards"]


# -- SIGTERM: stop after a checkpoint, resumable --------------------------------------------
def test_sigterm_stops_after_saving_a_checkpoint(fleet):
    done = fleet.done["c"]
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert "SIGTERM" in done.stderr and "rlprune resume" in done.stderr
    copy = fleet.copies / "c"
    status = read_json(copy / "status.json")
    assert status["state"] == "interrupted"
    assert fleet.seen["c_status"]["state"] == "interrupted"
    _, seen_done = fleet.seen["c_terminated_at"]
    # the checkpoint holds every finished episode: nothing to replay
    assert latest_episode(copy) == status["episodes_done"] >= seen_done
    assert status["episodes_done"] < EPISODES
    assert final_state(copy)["search"]["episode"] == status["episodes_done"]
    assert not (copy / "policy.json").exists()


def test_resume_after_sigterm_gives_the_uninterrupted_result(fleet):
    done = fleet.done["c_resume"]
    assert done.returncode == 0, done.stderr
    a, c = policy_of(fleet, "a"), policy_of(fleet, "c")
    assert sparsities(c) == sparsities(a)
    assert c["search"] == a["search"]
    assert final_state(fleet.run("c"))["search"]["rewards"] == \
        final_state(fleet.run("a"))["search"]["rewards"]


# -- list and status ----------------------------------------------------------------------
def list_rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}


def test_list_shows_state_episodes_and_best_reward(fleet):
    code, out, err = fleet.seen["list"]  # before any resume
    assert code == 0, err
    rows = list_rows(out)
    assert set(rows) == {"a", "a2", "a3", "b", "c"}
    best_a = policy_of(fleet, "a")["search"]["best_reward"]
    assert rows["a"][1] == "finished" and rows["a2"][1] == "finished"
    assert f"{EPISODES}/{EPISODES}" in rows["a"]
    assert f"{best_a:.4f}" in rows["a"]
    assert rows["b"][1] == "interrupted" and rows["c"][1] == "interrupted"
    # b's best so far is the best of a's first episodes (same seed, same trajectory)
    rewards_a = final_state(fleet.run("a"))["search"]["rewards"]
    b_done = read_json(fleet.copies / "b" / "status.json")["episodes_done"]
    assert f"{b_done}/{EPISODES}" in rows["b"]
    assert f"{max(rewards_a[:b_done]):.4f}" in rows["b"]


def test_list_and_status_after_the_resumes(fleet, capsys, monkeypatch):
    monkeypatch.chdir(fleet.root)
    code, out, err = run_main(capsys, "list")
    assert code == 0, err
    rows = list_rows(out)
    assert {name: row[1] for name, row in rows.items()} == dict.fromkeys(
        ("a", "a2", "a3", "b", "c", "same"), "finished")
    code, out, err = run_main(capsys, "status", "b")  # a name under runs/ works too
    assert code == 0, err
    status = yaml.safe_load(out)
    assert status["state"] == "finished"
    assert status["episodes_done"] == EPISODES
    assert status["best_reward"] == policy_of(fleet, "a")["search"]["best_reward"]


def test_list_with_no_runs(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_main(capsys, "list")
    assert code == 0 and "no runs" in out
    assert list(tmp_path.iterdir()) == []


# -- concurrency --------------------------------------------------------------------------
def test_two_searches_at_once_into_different_folders(fleet):
    """a2 and a3 were started together (with b and c): each finished into its own folder."""
    for name in ("a2", "a3"):
        assert fleet.done[name].returncode == 0, fleet.done[name].stderr
        assert read_json(fleet.run(name) / "status.json")["pid"] == fleet.done[name].pid
        assert read_json(fleet.run(name) / "status.json")["state"] == "finished"
        assert (fleet.run(name) / "policy.json").is_file()
        assert latest_episode(fleet.run(name)) == EPISODES
    assert fleet.done["a2"].pid != fleet.done["a3"].pid
    # same settings and seed, other processes (a3 forked, a a fresh interpreter): same search
    assert policy_of(fleet, "a2") == policy_of(fleet, "a3") == policy_of(fleet, "a")


def test_two_searches_at_once_into_the_same_folder(fleet):
    done = {seed: fleet.done[f"same{seed}"] for seed in (11, 12)}
    codes = sorted(d.returncode for d in done.values())
    assert codes == [0, 2], {s: (d.returncode, d.stderr[-800:]) for s, d in done.items()}
    winner = next(s for s, d in done.items() if d.returncode == 0)
    loser = next(s for s, d in done.items() if d.returncode == 2)
    err = assert_one_line_error(done[loser].returncode, done[loser].stderr)
    assert "runs/same" in err
    assert done[loser].stdout == ""
    run = fleet.run("same")
    assert read_json(run / "config.json")["seed"] == winner
    status = read_json(run / "status.json")
    assert status["state"] == "finished" and status["pid"] == done[winner].pid
    assert status["episodes_done"] == 4
    policy = read_json(run / "policy.json")
    assert policy["search"]["seed"] == winner and policy["search"]["episodes"] == 4
    assert latest_episode(run) == 4
    assert (run / "report.md").is_file() and (run / "pruned.rlprune").is_file()
    assert not [p for p in run.rglob("*") if f"tmp{done[loser].pid}" in p.name]
