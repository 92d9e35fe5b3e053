"""The Python API on a user's own model and DataLoaders (tests/usermodels/userproject.py):
in memory, in a run folder, stopped and resumed, killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import USER_MODELS, assert_one_line_error, run_main, snapshot
from torch import nn

import rlprune

SMALL = {"episodes": 8, "warmup": 3, "finetune_epochs": 1, "hidden": (16, 16),
         "batch_size": 8,
         # the selection stage and the int8 size are tested on their own
         "select_top_k": 0, "int8_size": False}


@pytest.fixture(scope="module")
def project():
    sys.path.insert(0, str(USER_MODELS))
    import userproject

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield userproject, userproject.trained()
    finally:
        torch.set_num_threads(threads)
        sys.path.remove(str(USER_MODELS))


def zeros(model: nn.Module) -> dict[str, int]:
    return {name: int((m.weight == 0).sum()) for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear)}


def test_search_in_memory_prunes_the_users_model_with_the_users_loaders(project, workdir):
    userproject, model = project
    before = {k: v.clone() for k, v in model.state_dict().items()}
    events = []
    result = rlprune.search(model, rlprune.Data(*userproject.loaders()), target=0.7,
                            callback=events.append, **SMALL)
    assert result.state == "finished" and result.run_dir is None
    policy = result.policy
    assert policy["model"] == "<DigitNet>" and policy["method"] == "ddpg"
    assert abs(policy["achieved"]["sparsity"] - 0.7) < 1e-3
    expected = {layer["name"]: round(layer["sparsity"] * layer["params"])
                for layer in policy["layers"]}
    assert zeros(result.model) == expected  # exactly the policy's zero counts
    assert len(result.history) == SMALL["episodes"]
    assert [row["episode"] for row in result.history] == list(range(1, 9))
    assert policy["search"]["best_reward"] == max(row["reward"] for row in result.history)
    kinds = [e.kind for e in events]
    assert kinds.count("episode") == 8 and kinds.count("finetune_epoch") == 1
    assert [e.state for e in events if e.kind == "state"] == ["running", "finished"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
    assert list(workdir.iterdir()) == []  # nothing written


def test_data_takes_datasets_loaders_and_tensors_alike(project):
    userproject, _ = project
    x, y = userproject.tensors()
    train, val, test = userproject.loaders()
    from_loaders = rlprune.Data(train, val, test)
    from_datasets = rlprune.Data(train.dataset, val.dataset, test.dataset)
    from_tensors = rlprune.Data((x[:1197], y[:1197]), (x[1197:1497], y[1197:1497]),
                                (x[1497:], y[1497:]))
    for data in (from_loaders, from_datasets, from_tensors):
        assert data.spec.input_shape == userproject.SHAPE  # 8 x 12, not square
        assert data.spec.num_classes == 10
        assert torch.equal(data.val.x, from_tensors.val.x)
        assert torch.equal(data.test.y, from_tensors.test.y)


@pytest.mark.parametrize("bad, words", [
    (lambda u: rlprune.Data([1, 2, 3], None, None), "train is a list"),
    (lambda u: rlprune.Data((torch.zeros(4, 8), torch.zeros(4)), None, None), "N x C x H x W"),
    (lambda u: rlprune.Data((torch.zeros(4, 1, 8, 8), torch.zeros(4)), None, None), "labels"),
    (lambda u: rlprune.search(u.make(5), u.loaders(), target=0.5), "5 outputs"),
    (lambda u: rlprune.search(u.make(), u.loaders(), target=1.5), "target"),
    (lambda u: rlprune.search(u.make(), u.loaders(), episodez=3), "unknown setting episodez"),
    (lambda u: rlprune.search(u.make(), u.loaders(), warmup=9, episodes=4), "warmup"),
])
def test_bad_input_to_the_api_is_one_user_error(project, workdir, bad, words):
    userproject, _ = project
    with pytest.raises(rlprune.UserError, match=words):
        bad(userproject)
    assert list(workdir.iterdir()) == []


def test_a_callback_stops_a_search_and_resume_finishes_it(project, workdir):
    userproject, model = project
    data = rlprune.Data(*userproject.loaders())
    settings = {**SMALL, "checkpoint_every": 2, "finetune_epochs": 0}
    full = rlprune.search(model, data, target=0.7, run_dir="full", **settings)

    def stop_at_five(event):
        return not (event.kind == "episode" and event.episode == 5)

    stopped = rlprune.search(model, data, target=0.7, run_dir="cut", callback=stop_at_five,
                             **settings)
    assert stopped.state == "interrupted" and stopped.policy is None
    assert stopped.episodes_done == 5 and stopped.checkpoint_episode == 5
    status = json.loads((workdir / "cut" / "status.json").read_text())
    assert status["state"] == "interrupted" and status["episodes_done"] == 5
    with pytest.raises(rlprune.UserError, match="give both model and data"):
        rlprune.resume("cut", model)
    resumed = rlprune.resume("cut", model, data)
    assert resumed.state == "finished"
    assert [r["reward"] for r in resumed.history] == [r["reward"] for r in full.history]
    assert resumed.policy["layers"] == full.policy["layers"]
    assert resumed.policy["search"] == full.policy["search"]
    assert set(os.listdir(workdir / "cut")) == set(os.listdir(workdir / "full"))


def test_resume_refuses_other_data_and_the_cli_refuses_an_object_run(project, workdir, capsys):
    userproject, model = project
    data = rlprune.Data(*userproject.loaders())
    rlprune.search(model, data, target=0.7, run_dir="cut",
                   callback=lambda e: not (e.kind == "episode" and e.episode == 4),
                   **{**SMALL, "checkpoint_every": 2})
    before = snapshot(workdir / "cut")
    x, y = userproject.tensors()
    other = rlprune.Data((x[:1197], y[:1197]), (x[1197:1497] * 2, y[1197:1497]),
                         (x[1497:], y[1497:]))
    with pytest.raises(rlprune.UserError, match="does not match this run's data"):
        rlprune.resume("cut", model, other)
    code, _, err = run_main(capsys, "resume", "cut")
    assert "rlprune.resume(run_dir, model=..., data=...)" in assert_one_line_error(code, err)
    assert snapshot(workdir / "cut") == before


def test_apply_gives_a_pruned_copy(project):
    userproject, model = project
    result = rlprune.baseline("lamp", model, userproject.loaders(), target=0.8,
                              finetune_epochs=0)
    assert result.policy["method"] == "lamp" and result.history == []
    pruned = rlprune.apply(result.policy, model)
    assert zeros(pruned) == zeros(result.model)
    tuned = rlprune.apply(result, model, userproject.loaders(), finetune_epochs=1)
    assert zeros(tuned) == zeros(result.model)  # the masks held through the fine-tune
    assert zeros(model) == {name: 0 for name in zeros(model)}  # the model itself is dense


def test_cli_takes_the_users_data_factory(project, workdir, capsys, monkeypatch):
    userproject, model = project
    monkeypatch.syspath_prepend(str(USER_MODELS))
    torch.save(model.state_dict(), workdir / "dense.pt")
    code, out, err = run_main(capsys, "search", "--model", "userproject:make", "--dataset",
                              "userproject:data", "--weights", "dense.pt", "--target", "0.7",
                              "--episodes", "4", "--warmup", "2", "--finetune-epochs", "0",
                              "--quiet", "--run-dir", "r", "--select-top-k", "0",
                              "--no-int8-size")
    assert code == 0, err
    config = json.loads((workdir / "r" / "config.json").read_text())
    assert config["dataset"] == "userproject:data"
    assert "dense test accuracy" in err and "run r" in out


def _job(mode: str, run: Path, weights: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(USER_MODELS), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, str(USER_MODELS / "api_job.py"), mode, str(run),
                             str(weights)], cwd=run.parent, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_an_api_run_killed_with_sigkill_resumes_to_the_same_best_policy(project, tmp_path):
    _, model = project
    weights = tmp_path / "dense.pt"
    torch.save(model.state_dict(), weights)
    killed = _job("search", tmp_path / "killed", weights)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and killed.poll() is None:
        status = tmp_path / "killed" / "status.json"
        if latest.is_file() and latest.read_text().strip() >= "ep000008" and status.is_file():
            done = json.loads(status.read_text()).get("episodes_done", 0)
            if done > 9:
                killed.send_signal(signal.SIGKILL)
                break
        time.sleep(0.005)
    assert killed.wait(60) == -signal.SIGKILL, killed.stderr.read()
    resumed = _job("resume", tmp_path / "killed", weights)
    import api_job  # the uninterrupted run, here meanwhile (its imports are done here)

    full = json.loads(json.dumps(api_job.outcome("search", str(tmp_path / "full"),
                                                 str(weights))))
    again, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    again = json.loads(again)
    assert again["state"] == "finished"
    assert again == full  # same rewards episode by episode, same best episode and policy
