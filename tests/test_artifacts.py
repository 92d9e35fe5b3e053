"""Deployable artifacts: sparse storage bit for bit, zeros kept through int8 (PTQ and QAT),
ONNX Runtime agreeing with PyTorch, a channel-pruned run's slim model, and the refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from support import (
    MODEL_MODULE,
    assert_one_line_error,
    copy_run,
    read_json,
    run_main,
    run_state,
    snapshot,
)
from support.loading import assert_int8_close, run_block
from torch import nn

import rlprune
from rlprune.models.sparse_io import pack, unpack
from rlprune.service.jobs.artifacts import load_model, save_model


@pytest.fixture
def finished(fleet, tmp_path, monkeypatch, one_thread):
    """A copy of the fleet's finished weight-sparse run a (the tiny net on digits), the
    current folder its parent."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(fleet.assets.models))
    return copy_run(fleet.run("a"), tmp_path / "a")


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(-1).view(torch.uint8)


def test_sparse_storage_gives_back_every_bit():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(40, 30, generator=gen)
    weight[torch.rand(40, 30, generator=gen) < 0.9] = 0.0
    weight[0, 0] = -0.0  # a negative zero is a value, not a hole
    state = {"w": weight, "dense": torch.randn(17, generator=gen),
             "half": torch.randn(5, generator=gen).half(),
             "bf16": torch.randn(6, generator=gen).bfloat16(),
             "count": torch.tensor(7), "flags": torch.tensor([True, False, True]),
             "int8": torch.randint(-128, 128, (33,), generator=gen, dtype=torch.int8)}
    files = pack(state)
    back = unpack(files)
    for name, t in state.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape, name
        assert torch.equal(_bits(back[name].to(torch.uint8) if t.dtype == torch.bool
                                 else back[name]),
                           _bits(t.to(torch.uint8) if t.dtype == torch.bool else t)), name
    assert torch.signbit(back["w"][0, 0])
    # 90% zeros: the mask and the values take well under half of the dense bytes
    stored = len(files["t0.mask"]) + len(files["t0.values"])
    assert stored < 0.2 * weight.numel() * 4


def test_a_saved_model_loads_bit_exact_and_shrinks_with_sparsity(tmp_path):
    from rlprune.models.registry import build_model
    from rlprune.service.jobs.measure import state_bytes

    sizes = {}
    for sparsity in (0.0, 0.9):
        torch.manual_seed(0)
        model = build_model("lenet5").eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Conv2d | nn.Linear):
                    m.weight[torch.rand(m.weight.shape) < sparsity] = 0.0
        path = tmp_path / f"m{sparsity}.rlprune"
        save_model(path, model, {"model": "lenet5"}, input_shape=(1, 28, 28), rebuild={
            "model": "lenet5", "kwargs": {"num_classes": 10, "in_channels": 1,
                                          "image_size": 28}})
        loaded = load_model(path)
        for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
            assert torch.equal(_bits(a), _bits(b)), name
        sizes[sparsity] = path.stat().st_size
        assert sizes[sparsity] <= state_bytes(model)
    assert sizes[0.9] < 0.25 * sizes[0.0]


# QAT's conversion alone takes most of a minute here (torchao's conv-bn patterns): -m slow
@pytest.mark.parametrize("qat_epochs", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_export_int8_keeps_every_zero_ptq_and_qat(qat_epochs, finished, capsys):
    code, out, err = run_main(capsys, "export-model", "a", "--out", "int8.rlprune", "--quantize",
                              "int8", "--qat-epochs", str(qat_epochs))
    assert code == 0, err
    rows = {r["variant"]: r for r in read_json(finished / "deployment.json")["export"]["rows"]}
    variants = ["dense fp32", "pruned fp32", "dense + int8 (PTQ)", "pruned + int8 (PTQ)"]
    assert list(rows) == variants + (["pruned + int8 (QAT)"] if qat_epochs else [])
    assert all(set(r["latency_ms"]) == {"pytorch"} for r in rows.values())
    assert f"| {list(rows)[-1]} |" in out and "## Deployable artifact" in (
        finished / "report.md").read_text()
    policy = read_json(finished / "policy.json")
    zeros = {la["name"]: round(la["sparsity"] * la["params"]) for la in policy["layers"]}
    from rlprune.models.data import load_dataset
    from rlprune.models.registry import build_model

    pruned = build_model(MODEL_MODULE + ":make")
    pruned.load_state_dict(run_state(finished))
    expected = sorted((tuple(m.weight.shape), int((m.weight == 0).sum()))
                      for n, m in pruned.named_modules() if n in zeros)
    from rlprune.models.quantize import int8_weights, ptq

    data = load_dataset("digits")
    counts = sorted((tuple(w.shape), int((w == 0).sum()))
                    for w in int8_weights(ptq(pruned, data.train)).values())
    assert counts == expected  # every pruned weight is still exactly zero in int8 (PTQ)
    # the exported (QAT or PTQ) model, loaded in a fresh interpreter (nothing quantized there)
    probe = ("import json, sys, torch, rlprune\n"
             "from rlprune.models.quantize import int8_weights\n"
             "m = rlprune.load_model(sys.argv[1])\n"
             "assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)\n"
             "print(json.dumps(sorted([list(w.shape), int((w == 0).sum())]\n"
             "                        for w in int8_weights(m).values())))\n")
    done = subprocess.run([sys.executable, "-c", probe, str(finished.parent / "int8.rlprune")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    qat_counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert [(tuple(shape), n) for shape, n in qat_counts] == expected  # and the file's


def test_export_onnx_agrees_with_pytorch(finished, fleet, capsys):
    code, out, err = run_main(capsys, "export-model", "a", "--out", "onnx/model.onnx",
                              "--format", "onnx")
    assert code == 0, err
    export = read_json(finished / "deployment.json")["export"]
    assert export["onnx_agreement"] >= 0.995
    assert f"agrees with PyTorch on {100 * export['onnx_agreement']:.2f}%" in out
    import onnx

    onnx.checker.check_model(str(finished.parent / "onnx" / "model.onnx"))
    # the README's ONNX block, as written, gives the run's pruned model's outputs
    from rlprune.models.registry import build_model

    pruned = build_model(f"{MODEL_MODULE}:make").eval()
    pruned.load_state_dict(run_state(finished))
    ((x, y),) = run_block("onnx", [finished.parent / "onnx"], env=fleet.assets.env(),
                          scratch=finished.parent)
    with torch.no_grad():
        torch.testing.assert_close(y, pruned(x), rtol=0, atol=1e-4)


def test_export_of_a_channel_run_is_the_slim_network(fleet, tmp_path, monkeypatch, capsys,
                                                     one_thread):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(fleet.assets.models))
    code, _, err = run_main(capsys, "search", "--model", f"{MODEL_MODULE}:make", "--weights",
                            str(fleet.assets.dense), "--dataset", "digits", "--granularity",
                            "channel", "--target", "0.5", "--episodes", "4", "--warmup", "2",
                            "--finetune-epochs", "0", "--quiet", "--run-dir", "ch",
                            # tested on their own; export-model makes the int8 file here
                            "--select-top-k", "0", "--no-int8-size")
    assert code == 0, err
    code, out, err = run_main(capsys, "export-model", "ch", "--out", "ch.rlprune")
    assert code == 0, err
    model = load_model(tmp_path / "ch.rlprune")
    dense_params = read_json(tmp_path / "ch" / "policy.json")["achieved"]["params_dense"]
    assert sum(p.numel() for p in model.parameters()) < dense_params
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    # ONNX, fp32 and int8: ONNX Runtime runs the slim network as PyTorch does, smaller than
    # the dense one's file, and int8 within 2 points of fp32 on the test split
    code, out, err = run_main(capsys, "export-model", "ch", "--out", "int8/model.onnx",
                              "--quantize", "int8")
    assert code == 0, err
    export = read_json(tmp_path / "ch" / "deployment.json")["export"]
    rows = {r["variant"]: r for r in export["rows"]}
    assert rows["pruned fp32"]["onnx_agreement"] >= 0.995
    assert rows["pruned fp32"]["onnx_mb"] < rows["dense fp32"]["onnx_mb"]
    assert rows["pruned + int8 (PTQ)"]["onnx_mb"] < rows["pruned fp32"]["onnx_mb"]
    assert (rows["pruned + int8 (PTQ)"]["onnx_accuracy"]
            >= rows["pruned fp32"]["onnx_accuracy"] - 0.02)
    assert export["onnx_agreement"] == rows["pruned + int8 (PTQ)"]["onnx_agreement"]
    assert all(set(r["latency_ms"]) == {"pytorch", "onnxruntime"} for r in rows.values())
    assert "| pruned + int8 (PTQ) |" in out and "ONNX Runtime ms, batch 32" in out
    # the README's ONNX block, as written, runs the int8 file close to the slim fp32 network
    ((x, y),) = run_block("onnx", [tmp_path / "int8"], env=fleet.assets.env(),
                          scratch=tmp_path)
    with torch.no_grad():
        assert_int8_close(y, model(x))
    # a channel run made before pruned.rlprune holds pruned.pt, a torch.export program
    from rlprune.models.train import save_program

    old = copy_run(tmp_path / "ch", tmp_path / "ch-old")
    save_program(old / "pruned.pt", load_model(old / "pruned.rlprune"), (1, 28, 28), {})
    (old / "pruned.rlprune").unlink()
    code, _, err = run_main(capsys, "export-model", "ch-old", "--out", "old.pt2")
    assert code == 0, err
    with torch.no_grad():
        x = torch.randn(3, 1, 28, 28)
        assert torch.equal(torch.export.load(tmp_path / "old.pt2").module()(x), model(x))


SUFFIXES = (".rlprune (rlprune.load_model(FILE)), .pt2 (torch.export.load(FILE).module()) or "
            ".onnx (onnxruntime.InferenceSession(FILE))")


def test_a_run_made_before_pruned_rlprune_still_exports(finished, capsys):
    """A weight run made before the run's model was pruned.rlprune holds pruned.pt (a
    torch.save'd state_dict): export-model reads it and writes the same model."""
    from rlprune.models.registry import build_model
    from rlprune.models.train import save_weights

    model = build_model(f"{MODEL_MODULE}:make").eval()
    model.load_state_dict(run_state(finished))
    save_weights(finished / "pruned.pt", model, {})
    (finished / "pruned.rlprune").unlink()
    code, _, err = run_main(capsys, "export-model", "a", "--out", "old.rlprune")
    assert code == 0, err
    with torch.no_grad():
        x = torch.randn(4, 1, 28, 28)
        assert torch.equal(load_model("old.rlprune")(x), model(x))


@pytest.mark.parametrize("argv, words", [
    (["export-model", "nope", "--out", "x.rlprune"], "no run at nope"),
    (["export-model", "a", "--out", "x.rlprune", "--format", "tflite"], "--format"),
    (["export-model", "a", "--out", "x.rlprune", "--quantize", "int4"], "--quantize"),
    (["export-model", "a", "--out", "x.rlprune", "--qat-epochs", "2"], "--qat-epochs needs"),
    (["export-model", "a", "--out", "exists.rlprune"], "pass --force"),
    (["export-model", "a", "--out", "/proc/x.rlprune"], "cannot write"),
    # the suffix says the format, and how the file opens
    (["export-model", "a", "--out", "x.pt"], f"--out 'x.pt' must end in {SUFFIXES}"),
    (["export-model", "a", "--out", "x"], f"--out 'x' must end in {SUFFIXES}"),
    (["export-model", "a", "--out", "x.onnx", "--format", "rlprune"],
     "--format rlprune does not match --out 'x.onnx' (its suffix makes it onnx)"),
    (["export-model", "a", "--out", "x.rlprune", "--format", "pt"], "--format"),
])
def test_export_refusals(argv, words, finished, capsys):
    (finished.parent / "exists.rlprune").write_text("precious")
    before = snapshot(finished.parent)
    code, _, err = run_main(capsys, *argv)
    assert words in assert_one_line_error(code, err)
    assert snapshot(finished.parent) == before


def test_export_refuses_a_run_that_is_not_finished(fleet, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = copy_run(fleet.copies / "b", tmp_path / "b")
    before = snapshot(tmp_path)
    code, _, err = run_main(capsys, "export-model", str(run), "--out", "x.rlprune")
    assert "not finished" in assert_one_line_error(code, err)
    assert snapshot(tmp_path) == before


def test_int8_on_a_platform_without_the_engine_is_refused(finished, capsys, monkeypatch):
    """Stand-in for a torch build without the x86 quantized engine."""
    monkeypatch.setattr("rlprune.service.jobs.artifacts.quantized_engines", lambda: ["qnnpack"])
    before = snapshot(finished.parent)
    code, _, err = run_main(capsys, "export-model", "a", "--out", "q.rlprune", "--quantize",
                            "int8")
    assert "x86 quantized engine" in assert_one_line_error(code, err)
    assert snapshot(finished.parent) == before


def test_the_python_api_exports_a_result(finished):
    out = rlprune.export("a", "api.rlprune")
    assert out.path.is_file() and json.loads(
        (finished / "deployment.json").read_text())["export"]["path"] == "api.rlprune"
    assert rlprune.load_model("api.rlprune")(torch.randn(1, 1, 28, 28)).shape == (1, 10)
    before = snapshot(finished.parent)
    with pytest.raises(rlprune.UserError, match=r"^path 'api.pt' must end in \.rlprune"):
        rlprune.export("a", "api.pt")
    assert snapshot(finished.parent) == before


def test_the_python_api_refuses_a_model_without_its_data(finished):
    """Dense.of(model, None) used to fail with an AttributeError deep in check_model."""
    before = snapshot(finished.parent)
    with pytest.raises(rlprune.UserError, match="give the data with the model"):
        rlprune.export("a", "api.rlprune", model=nn.Linear(2, 2))
    assert snapshot(finished.parent) == before
