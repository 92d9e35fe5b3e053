"""A new method or granularity is one registration: every layer that lists, checks, runs,
saves, reports or applies them reads the registries (`rlprune.agent.methods`,
`rlprune.env.granularity`), so a toy one registered here runs whole jobs."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rlprune.agent.config import SearchConfig
from rlprune.agent.methods import Method, register, unregister
from rlprune.env.granularity import granularity_named, granularity_names
from rlprune.env.granularity import register as register_granularity
from rlprune.env.granularity import unregister as unregister_granularity
from rlprune.env.pruning_env import PruningEnv
from rlprune.models.errors import UserError
from rlprune.service.bench.runner import bench_methods, run_bench
from rlprune.service.jobs.api import apply
from rlprune.service.jobs.lifecycle import job_methods, run_job

TINY = {"model": "tiny", "dataset": "tiny", "fc_k": 1.0, "episodes": 4, "warmup": 2,
        "checkpoint_every": 4, "finetune_epochs": 1, "hidden": (16, 16), "batch_size": 4}


def _lamp_again(env) -> list[int]:
    """LAMP's allocation under another name: any feasible allocation will do, what is tested
    is that it reaches the job through this method's registration alone."""
    return list(env.baseline_counts("lamp"))


@pytest.fixture
def toy_method():
    method = register(Method("toy-rule", ("weight",), allocate=_lamp_again,
                             seed_policy=True, in_default_bench=("weight",)))
    yield method
    unregister(method.name)


class ToyEnv(PruningEnv):
    """The weight env under another name: enough to show every layer asks the registry."""


@pytest.fixture
def toy_granularity():
    weight = granularity_named("weight")

    def policy(env, sparsities, **common):
        return {**weight.build_policy(env, sparsities, **common), "granularity": "toy"}

    toy = register_granularity(dataclasses.replace(
        weight, name="toy", env_class=ToyEnv, build_policy=policy,
        summary=lambda config, env: f"toy: {len(env.agent_layers)} layers"))
    yield toy
    unregister_granularity(toy.name)


def test_a_registered_method_runs_as_a_job_a_seed_policy_and_a_bench_cell(
        tmp_path, tiny_dense, one_thread, toy_method):
    assert "toy-rule" in job_methods("weight") and "toy-rule" not in job_methods("channel")
    assert "toy-rule" in bench_methods("weight")
    config = SearchConfig(**TINY, target=0.5)
    result = run_job(config, tiny_dense, "toy-rule", run_dir=tmp_path / "run")
    assert result.state == "finished" and result.policy["method"] == "toy-rule"
    lamp = run_job(config, tiny_dense, "lamp", in_memory=True)
    assert [la["sparsity"] for la in result.policy["layers"]] == [
        la["sparsity"] for la in lamp.policy["layers"]]
    on_disk = json.loads((tmp_path / "run" / "policy.json").read_text())
    assert on_disk["method"] == "toy-rule"
    # a seed policy a search may play, by name
    SearchConfig(**TINY, target=0.5, seed_policies=("toy-rule",)).validate()
    report = run_bench(tiny_dense, SearchConfig(**TINY), targets=[0.5],
                       methods=["toy-rule"], seeds=1, out=tmp_path / "bench",
                       log=lambda line: None)
    assert [r["method"] for r in report["results"]] == ["toy-rule"]


def test_an_unregistered_method_is_refused_with_the_choices(tiny_dense, toy_method):
    config = SearchConfig(**TINY, target=0.5)
    unregister("toy-rule")
    with pytest.raises(UserError, match="^method 'toy-rule' is not a method for granularity "
                                        "weight; choose from ddpg, "):
        run_job(config, tiny_dense, "toy-rule", in_memory=True)
    with pytest.raises(UserError, match="seed_policies has unknown toy-rule"):
        SearchConfig(**TINY, target=0.5, seed_policies=("toy-rule",)).validate()


def test_a_registered_granularity_runs_a_search_saves_and_applies(
        tmp_path, tiny_dense, one_thread, toy_granularity):
    assert "toy" in granularity_names()
    config = SearchConfig(**TINY, target=0.5, granularity="toy")
    config.validate()
    seen = []
    result = run_job(config, tiny_dense, run_dir=tmp_path / "run",
                     on_start=lambda opened: seen.append(opened.runner.env))
    assert isinstance(seen[0], ToyEnv)
    assert result.state == "finished" and result.policy["granularity"] == "toy"
    assert result.policy["search"]["episodes"] == 4
    # applied to a fresh model through the registry: the same masks as the job's
    model = apply(result.policy, tiny_dense.model)
    zeros = {name: float((m.weight == 0).float().mean()) for name, m in model.named_modules()
             if name in {la["name"] for la in result.policy["layers"]}}
    for layer in result.policy["layers"]:
        assert abs(zeros[layer["name"]] - layer["sparsity"]) < 0.02, layer
    # its summary is the one the command line prints
    assert granularity_named("toy").summary(config, seen[0]).startswith("toy: ")


def test_an_unknown_granularity_names_the_registered_ones(toy_granularity):
    with pytest.raises(UserError, match="granularity must be one of weight, channel, toy"):
        SearchConfig(**TINY, target=0.5, granularity="nope").validate()
