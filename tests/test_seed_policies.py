"""The search's start (seed policies) and its final pick (ties broken by val loss)."""

import dataclasses

import pytest

from rlprune.agent.config import SearchConfig
from rlprune.agent.search import Search
from rlprune.agent.search_state import _better


@pytest.fixture
def dense(tiny_dense):
    return tiny_dense


@pytest.mark.parametrize("mapping", ["absolute", "feasible"])
@pytest.mark.parametrize("fc_rule", ["3sigma", "agent"])
def test_seed_policies_are_played_exactly_first(tmp_path, dense, one_thread, mapping, fc_rule):
    names = ("uniform", "global", "lamp", "erk")
    config = SearchConfig(model="tiny", dataset="tiny", fc_rule=fc_rule, fc_k=1.0, target=0.6,
                          action_mapping=mapping, episodes=5, warmup=5, checkpoint_every=5,
                          hidden=(16, 16), batch_size=4, seed_policies=names)
    search = Search(config, dense)
    played = []
    record = search._on_episode_end
    search._on_episode_end = lambda r, info: (played.append(info["sparsities"]), record(r, info))
    search.run()
    assert len(played) == 5
    for name, sparsities in zip(names, played):
        env = Search(config, dense).env
        expected = env.sparsities(env.baseline_counts(name))
        assert sparsities == pytest.approx(expected, abs=1e-12), name
    assert played[4] != pytest.approx(played[0])  # then random warm-up


def test_equal_rewards_are_broken_by_the_lower_val_loss():
    best = {"reward": 0.95, "proxy_loss": 0.40}
    assert _better(0.95, 0.35, best)
    assert not _better(0.95, 0.45, best)
    assert not _better(0.95, 0.40, best)  # a full tie keeps the earlier episode
    assert _better(0.96, 9.0, best) and not _better(0.94, 0.0, best)
    assert _better(0.95, 1.0, {"reward": 0.95})  # a best saved before losses were kept


def test_search_keeps_the_best_reward_then_lowest_loss(tmp_path, dense, one_thread):
    config = SearchConfig(model="tiny", dataset="tiny", fc_k=1.0, target=0.6, episodes=12,
                          warmup=12, checkpoint_every=12, hidden=(16, 16), batch_size=4)
    search = Search(config, dense)
    seen = []
    record = search._on_episode_end
    search._on_episode_end = lambda r, info: (seen.append((r, info["proxy_loss"])),
                                              record(r, info))
    search.run()
    top = max(r for r, _ in seen)
    loss = min(loss for r, loss in seen if r == top)
    best = search.state.best
    assert (best["reward"], best["proxy_loss"]) == (top, loss)
    assert seen[best["episode"] - 1] == (top, loss)


def test_dataclass_fields_reach_the_env():
    config = SearchConfig(action_mapping="feasible")
    assert config.env_config().action_mapping == "feasible"
    assert dataclasses.asdict(config)["action_mapping"] == "feasible"


def test_random_search_draws_its_own_stream_not_the_searchs_warm_up(dense, one_thread):
    """Random search plays the same seed policies, then random episodes of its own: with the
    search's stream it replayed the search's warm-up and could return the search's own pick."""
    from rlprune.service.jobs.lifecycle import JobRunner

    config = SearchConfig(model="tiny", dataset="tiny", fc_k=1.0, target=0.6, episodes=8,
                          warmup=8, checkpoint_every=8, hidden=(16, 16), batch_size=4,
                          finetune_epochs=0)

    def rewards(method: str) -> list[float]:
        runner = JobRunner(config, dense, method)
        runner.run()
        return runner.search.state.rewards

    search, random_search = rewards("ddpg"), rewards("random")
    assert random_search[:4] == search[:4]  # the four seed policies, the same allocations
    assert all(a != b for a, b in zip(random_search[4:], search[4:]))
    assert rewards("random") == random_search  # its own stream is seeded


def test_a_td3_search_runs_end_to_end_and_resumes_its_own_kind(tmp_path, dense, one_thread):
    """`agent="td3"`: SB3's TD3 with AMC's changes searches, checkpoints and resumes; a
    DDPG config refuses its checkpoint, and a method without an agent refuses td3."""
    from stable_baselines3 import TD3

    from rlprune.models.errors import SettingError, UserError
    from rlprune.service.jobs.checkpoint_store import CheckpointStore
    from rlprune.service.jobs.lifecycle import JobRunner

    config = SearchConfig(model="tiny", dataset="tiny", fc_k=1.0, target=0.6, episodes=8,
                          warmup=4, checkpoint_every=4, hidden=(16, 16), batch_size=4,
                          agent="td3", finetune_epochs=0)
    search = Search(config, dense)
    store = CheckpointStore(tmp_path)
    search.run(checkpoints=store)
    assert isinstance(search.agent, TD3) and len(search.state.rewards) == 8
    resumed = Search(dataclasses.replace(config, episodes=10), dense)
    resumed.run(checkpoints=store, resume_from=store.latest())
    assert len(resumed.state.rewards) == 10 and resumed.state.rewards[:8] == search.state.rewards
    with pytest.raises(UserError, match="does not match this run's agent"):
        Search(dataclasses.replace(config, agent="ddpg"), dense).load(store.latest())
    for method in ("random", "uniform"):
        with pytest.raises(SettingError, match="method .* has no agent"):
            JobRunner(config, dense, method)


def test_tpe_plays_the_seed_policies_first_and_resumes_exactly(tmp_path, dense, one_thread):
    """Optuna's TPE over the env's actions: its first trials are the seed policies (the same
    allocations as the search's first episodes), then its own; seeded; a run stopped after
    episode 6 and resumed from its checkpoint gives the uninterrupted run's trials."""
    from rlprune.service.jobs.lifecycle import JobRunner
    from rlprune.service.jobs.resume import open_resume
    from rlprune.service.jobs.run_folder import Job

    config = SearchConfig(model="tiny", dataset="tiny", fc_k=1.0, target=0.6, episodes=14,
                          warmup=4, checkpoint_every=3, hidden=(16, 16), batch_size=4,
                          finetune_epochs=0)

    def played() -> JobRunner:
        runner = JobRunner(config, dense, "tpe")
        result = runner.run()
        assert result.state == "finished" and result.policy["method"] == "tpe"
        return runner

    search = JobRunner(config, dense)
    search.run()
    runner = played()
    rewards = runner.search.state.rewards
    assert len(rewards) == 14 and rewards[:4] == search.search.state.rewards[:4]
    assert rewards[4:] != search.search.state.rewards[4:14]
    assert played().search.state.rewards == rewards  # seeded
    episodes: list[int] = []

    def stop_after_six(event) -> bool | None:  # False: stop at the next boundary
        if event.kind != "episode":
            return None
        episodes.append(event.episode)
        return len(episodes) < 6

    stopping = JobRunner(config, dense, "tpe", callback=stop_after_six)
    job = stopping.create(tmp_path / "run")
    with job:
        assert stopping.run(job).state == "interrupted"
    assert Job.open(tmp_path / "run").status()["state"] == "interrupted"
    found = open_resume(tmp_path / "run", lambda c: dense)
    assert found.checkpoint.name == "ep000006"
    with found.job:
        assert found.runner.run(found.job, found.checkpoint).state == "finished"
    assert found.runner.search.state.rewards == rewards
    from rlprune.models.errors import SettingError

    with pytest.raises(SettingError, match="workers must be 1 for tpe"):
        JobRunner(dataclasses.replace(config, workers=2, episodes=14), dense, "tpe")
