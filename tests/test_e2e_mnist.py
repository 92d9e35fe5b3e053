"""End to end through the installed `rlprune` command on the embedded mnist5k data:
pretrain a small model, search briefly, export, and apply the policy to a fresh copy."""

import json
import os
import subprocess
import sys
import textwrap

import torch

TINY = textwrap.dedent('''
    from torch import nn

    def factory(num_classes=10, in_channels=1, image_size=28):
        return nn.Sequential(
            nn.Conv2d(in_channels, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))
''')


def rlprune(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rlprune", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_pretrain_search_export_apply_on_mnist5k(tmp_path):
    (tmp_path / "tinycnn.py").write_text(TINY)
    done = rlprune(tmp_path, "pretrain", "--model", "tinycnn:factory", "--dataset", "mnist5k",
                   "--epochs", "1", "--out", "dense.pt")
    assert done.returncode == 0, done.stderr
    done = rlprune(tmp_path, "search", "--model", "tinycnn:factory", "--dataset", "mnist5k",
                   "--checkpoint", "dense.pt", "--target", "0.8", "--episodes", "6",
                   "--warmup", "3", "--checkpoint-every", "3", "--finetune-epochs", "1",
                   "--run-dir", "runs/e2e", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "test accuracy, fine-tuned" in done.stdout
    run = tmp_path / "runs" / "e2e"
    # the printed table shows what a user ships: the sparse file's and the int8 file's sizes
    deploy = json.loads((run / "deployment.json").read_text())
    assert deploy["int8_mb"] < deploy["file_mb"] < deploy["size_mb"]["dense"]
    lines = {line.split("  ")[1]: line for line in done.stdout.splitlines()
             if line.startswith("  ") and "  " in line[2:]}
    sparse = lines["size on disk, dense state_dict → sparse file (MB)"]
    assert f"{deploy['size_mb']['dense']:.3f} → {deploy['file_mb']:.3f}" in sparse
    assert f"{deploy['int8_mb']:.3f}" in lines["size on disk, int8 sparse file (MB)"]
    # the int8 file is in the run folder, to ship as it is
    assert "pruned.int8.rlprune" in lines["size on disk, int8 sparse file (MB)"]
    assert (run / "pruned.int8.rlprune").stat().st_size / 1e6 == deploy["int8_mb"]
    assert "do not speed up dense kernels" in lines["speed"]
    assert "rlprune export-model runs/e2e --out model.rlprune" in lines["deployable file"]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["episodes_done"] == 6
    policy = json.loads((run / "policy.json").read_text())
    assert policy["dataset"] == "mnist5k" and policy["method"] == "ddpg"
    pruned = sum(round(la["sparsity"] * la["params"]) for la in policy["layers"])
    assert pruned == round(0.8 * policy["achieved"]["prunable_weights"])
    assert 0.0 < policy["accuracy"]["finetuned"] <= 1.0

    done = rlprune(tmp_path, "export", "runs/e2e", "--out", "p.yaml", "--format", "yaml")
    assert done.returncode == 0, done.stderr
    done = rlprune(tmp_path, "apply", "p.yaml", "--model", "tinycnn:factory", "--checkpoint",
                   "dense.pt", "--out", "applied.pt")
    assert done.returncode == 0, done.stderr
    state = torch.load(tmp_path / "applied.pt", weights_only=True)["state_dict"]
    for layer in policy["layers"]:
        zeros = int((state[layer["name"] + ".weight"] == 0).sum())
        assert zeros == round(layer["sparsity"] * layer["params"]), layer["name"]
