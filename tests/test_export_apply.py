"""`rlprune export` and `rlprune apply`: the policy as data, applied to a fresh dense copy.

The policy comes from the shared fleet's finished run a (support.fleet.Fleet). Applied
sparsities are checked by counting exact zeros in the saved weights; the trained dense weights
have none.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from support import (
    MODEL_MODULE,
    OTHER_MODULE,
    TINY_LAYERS,
    assert_one_line_error,
    one_torch_thread,
    read_json,
    run_main,
    run_state,
    snapshot,
)


@pytest.fixture
def workdir(tmp_path, monkeypatch, fleet):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(fleet.assets.models))
    with one_torch_thread():
        yield tmp_path


@pytest.fixture
def policy(fleet) -> dict:
    return read_json(fleet.run("a") / "policy.json")


def dense_state(fleet) -> dict[str, torch.Tensor]:
    return torch.load(fleet.assets.dense, weights_only=True)["state_dict"]


def zeros(state: dict[str, torch.Tensor], layer: str) -> int:
    return int((state[f"{layer}.weight"] == 0).sum())


# -- export -------------------------------------------------------------------------------
def test_export_json_to_stdout(fleet, policy, capsys, workdir):
    code, out, err = run_main(capsys, "export", str(fleet.run("a")))
    assert code == 0, err
    assert json.loads(out) == policy
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_export_to_a_file(fleet, policy, capsys, workdir, fmt):
    out_file = workdir / "out" / f"policy.{fmt}"
    code, _, err = run_main(capsys, "export", str(fleet.run("a")), "--out", str(out_file),
                            "--format", fmt)
    assert code == 0, err
    text = out_file.read_text()
    loaded = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    assert loaded == policy
    if fmt == "yaml":
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)  # really YAML, not JSON under another name
    assert [p.name for p in out_file.parent.iterdir()] == [out_file.name]  # no temp left


def test_export_yaml_to_stdout(fleet, policy, capsys, workdir):
    code, out, err = run_main(capsys, "export", str(fleet.run("a")), "--format", "yaml")
    assert code == 0, err
    assert yaml.safe_load(out) == policy


def test_export_refuses_an_existing_file_without_force(fleet, policy, capsys, workdir):
    target = workdir / "p.json"
    target.write_text("keep me\n")
    code, out, err = run_main(capsys, "export", str(fleet.run("a")), "--out", str(target))
    assert "exists" in assert_one_line_error(code, err)
    assert target.read_text() == "keep me\n"
    code, _, err = run_main(capsys, "export", str(fleet.run("a")), "--out", str(target),
                            "--force")
    assert code == 0, err
    assert read_json(target) == policy


def test_export_refuses_a_run_without_policy(fleet, capsys, workdir):
    run = fleet.copies / "b"  # interrupted: no policy yet
    before = snapshot(run)
    code, _, err = run_main(capsys, "export", str(run), "--out", str(workdir / "p.json"))
    assert "no policy" in assert_one_line_error(code, err)
    assert list(workdir.iterdir()) == []
    assert snapshot(run) == before


def test_export_refuses_a_run_that_does_not_exist(capsys, workdir):
    code, _, err = run_main(capsys, "export", "nope", "--out", "p.json")
    assert "no run" in assert_one_line_error(code, err)
    assert list(workdir.iterdir()) == []


# -- apply --------------------------------------------------------------------------------
def apply(capsys, fleet, policy_path, out, *extra: str) -> tuple[int, str, str]:
    return run_main(capsys, "apply", str(policy_path), "--model", f"{MODEL_MODULE}:make",
                    "--checkpoint", str(fleet.assets.dense), "--out", str(out), *extra)


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_apply_reproduces_every_layer_sparsity(fleet, policy, capsys, workdir, fmt):
    exported = workdir / f"policy.{fmt}"
    assert run_main(capsys, "export", str(fleet.run("a")), "--out", str(exported),
                    "--format", fmt)[0] == 0
    dense_before = fleet.assets.dense.read_bytes()
    code, out, err = apply(capsys, fleet, exported, workdir / "pruned.pt")
    assert code == 0, err
    assert fleet.assets.dense.read_bytes() == dense_before  # the dense copy is untouched
    state = torch.load(workdir / "pruned.pt", weights_only=True)["state_dict"]
    dense = dense_state(fleet)
    for layer in policy["layers"]:
        name = layer["name"]
        assert zeros(dense, name) == 0
        assert zeros(state, name) == round(layer["sparsity"] * layer["params"]), name
        assert zeros(state, name) / layer["params"] == layer["sparsity"]
        kept = state[f"{name}.weight"] != 0
        # what is kept is the dense weight itself, unchanged
        assert torch.equal(state[f"{name}.weight"][kept], dense[f"{name}.weight"][kept])
        w = dense[f"{name}.weight"]
        if layer["owner"] == "agent" and 0 < layer["sparsity"] < 1:  # magnitude pruning
            assert w[~kept].abs().max() <= w[kept].abs().min()
        if layer["owner"] == "fc-rule" and 0 < layer["sparsity"] < 1:  # nearest the mean
            d = (w - w.mean()).abs()
            assert d[~kept].max() <= d[kept].min()
    # the same masks as the search's own pruned model
    searched = run_state(fleet.run("a"))
    for name in TINY_LAYERS:
        assert torch.equal(state[f"{name}.weight"] == 0, searched[f"{name}.weight"] == 0), name


def test_apply_with_finetuning_keeps_the_zeros(fleet, policy, capsys, workdir):
    code, _, err = apply(capsys, fleet, fleet.run("a") / "policy.json", workdir / "ft.pt",
                         "--finetune-epochs", "1")
    assert code == 0, err
    state = torch.load(workdir / "ft.pt", weights_only=True)["state_dict"]
    dense = dense_state(fleet)
    changed = False
    for layer in policy["layers"]:
        name = layer["name"]
        assert zeros(state, name) >= round(layer["sparsity"] * layer["params"]), name
        assert zeros(state, name) <= round(layer["sparsity"] * layer["params"]) + 2, name
        changed |= not torch.equal(state[f"{name}.weight"], dense[f"{name}.weight"])
    assert changed  # it did train


def test_apply_refuses_an_existing_out_without_force(fleet, capsys, workdir):
    out = workdir / "pruned.pt"
    out.write_bytes(b"keep")
    code, _, err = apply(capsys, fleet, fleet.run("a") / "policy.json", out)
    assert "exists" in assert_one_line_error(code, err)
    assert out.read_bytes() == b"keep"


def write_policy(workdir, policy: dict) -> object:
    path = workdir / "edited.json"
    path.write_text(json.dumps(policy))
    return path


@pytest.mark.parametrize("edit", ["rename", "resize", "drop-and-add"])
def test_apply_refuses_a_policy_that_does_not_fit(fleet, policy, capsys, workdir, edit):
    layers = policy["layers"]
    if edit == "rename":
        layers[1]["name"] = "c9"
        expected = "c9"
    elif edit == "resize":
        layers[2]["params"] += 1
        expected = "c3"
    else:
        layers.append({"name": "features.0", "kind": "conv", "params": 9, "sparsity": 0.5,
                       "owner": "agent"})
        expected = "features.0"
    path = write_policy(workdir, policy)
    out = workdir / "pruned.pt"
    code, _, err = apply(capsys, fleet, path, out)
    err = assert_one_line_error(code, err)
    assert "does not fit" in err and expected in err
    assert not out.exists()
    assert sorted(p.name for p in workdir.iterdir()) == ["edited.json"]


def test_apply_refuses_a_policy_for_another_model(fleet, capsys, workdir):
    out = workdir / "pruned.pt"
    code, _, err = run_main(capsys, "apply", str(fleet.run("a") / "policy.json"), "--model",
                            f"{OTHER_MODULE}:make", "--checkpoint",
                            str(fleet.assets.other_dense), "--out", str(out))
    err = assert_one_line_error(code, err)
    assert "c1" in err
    assert not out.exists()


@pytest.mark.parametrize("content", ["{not json: [", '{"format": "something/else"}',
                                     "just a string\n"])
def test_apply_refuses_a_file_that_is_not_a_policy(fleet, capsys, workdir, content):
    path = workdir / "bad.json"
    path.write_text(content)
    out = workdir / "pruned.pt"
    code, _, err = apply(capsys, fleet, path, out)
    assert_one_line_error(code, err)
    assert not out.exists()


def test_apply_refuses_a_sparsity_outside_the_unit_interval(fleet, policy, capsys, workdir):
    policy["layers"][0]["sparsity"] = 1.5
    out = workdir / "pruned.pt"
    code, _, err = apply(capsys, fleet, write_policy(workdir, policy), out)
    assert "c1" in assert_one_line_error(code, err)
    assert not out.exists()


def test_apply_a_copied_policy_file_elsewhere(fleet, policy, capsys, workdir):
    """A policy is plain data: a copy anywhere applies the same."""
    copy = workdir / "sub" / "p.json"
    copy.parent.mkdir()
    shutil.copy(fleet.run("a") / "policy.json", copy)
    code, out, err = apply(capsys, fleet, copy, workdir / "sub" / "m.pt")
    assert code == 0, err
    meta = torch.load(workdir / "sub" / "m.pt", weights_only=True)["meta"]
    assert meta["policy"] == {la["name"]: la["sparsity"] for la in policy["layers"]}


def test_a_version_1_policy_still_applies(fleet, policy, capsys, workdir):
    """Policies written before `granularity` existed (format rlprune.policy/1) are weight
    policies and apply the same."""
    old = {k: v for k, v in policy.items() if k != "granularity"}
    old["format"] = "rlprune.policy/1"
    (workdir / "old.json").write_text(json.dumps(old))
    code, out, err = apply(capsys, fleet, workdir / "old.json", workdir / "old.pt")
    assert code == 0, err
    meta = torch.load(workdir / "old.pt", weights_only=True)["meta"]
    assert meta["policy"] == {la["name"]: la["sparsity"] for la in policy["layers"]}
