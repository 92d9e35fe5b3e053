"""The README's "Loading what you exported": each block runs as written, in a fresh
interpreter, on files exported from a tiny finished run (the fleet's run a: the tiny net on
digits, weight-pruned), and gives the predictions of the model exported. The ONNX block runs
where ONNX files are exported anyway (test_artifacts.py).
"""

from __future__ import annotations

import shutil

import pytest
import torch
from support import MODEL_MODULE, copy_run, one_torch_thread, run_state
from support.loading import assert_int8_close, run_block

import rlprune

JOB = "runs/JOB"  # where the README's policy block finds the run


@pytest.fixture(scope="module")
def exported(fleet, tmp_path_factory):
    """A folder holding a copy of run a at runs/JOB and, under the names the README uses:
    run/ (the run's own pruned.rlprune), fp32/ (export-model to .rlprune and .pt2) and int8/
    (export-model --quantize int8 to .pt2)."""
    from rlprune.service.cli.main import main

    root = tmp_path_factory.mktemp("loading")
    run = copy_run(fleet.run("a"), root / JOB)
    (root / "run").mkdir()
    shutil.copy(run / "pruned.rlprune", root / "run" / "model.rlprune")
    with pytest.MonkeyPatch.context() as mp, one_torch_thread():
        mp.syspath_prepend(str(fleet.assets.models))
        for out, extra in (("fp32/model.rlprune", ()), ("fp32/model.pt2", ()),
                           ("int8/model.pt2", ("--quantize", "int8"))):
            assert main(["export-model", str(run), "--out", str(root / out), *extra]) == 0
    return root


def _dense_net(fleet) -> torch.nn.Module:
    """A fresh tiny net (the run's architecture), untrained."""
    from rlprune.models.registry import build_model

    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(fleet.assets.models))
        return build_model(f"{MODEL_MODULE}:make").eval()


@pytest.fixture(scope="module")
def pruned(exported, fleet) -> torch.nn.Module:
    """The run's pruned model, built here: the tiny net with the weights stored in the run's
    pruned.rlprune, read from its zip (not through rlprune.load_model)."""
    model = _dense_net(fleet)
    model.load_state_dict(run_state(exported / JOB))
    return model


def _run(kind, folders, fleet, tmp_path, preamble=""):
    return run_block(kind, folders, env=fleet.assets.env(), scratch=tmp_path, preamble=preamble)


@torch.no_grad()
def test_the_rlprune_block_loads_a_run_folder_file_and_an_export(exported, pruned, fleet,
                                                                 tmp_path):
    for x, y in _run("rlprune", [exported / "run", exported / "fp32"], fleet, tmp_path):
        assert y.shape == (64, 10)
        torch.testing.assert_close(y, pruned(x), rtol=0, atol=1e-6)


@torch.no_grad()
def test_the_pt2_block_loads_an_fp32_and_an_int8_export(exported, pruned, fleet, tmp_path):
    (x, y), (x8, y8) = _run("pt2", [exported / "fp32", exported / "int8"], fleet, tmp_path)
    torch.testing.assert_close(y, pruned(x), rtol=0, atol=1e-5)
    assert_int8_close(y8, pruned(x8))


@torch.no_grad()
def test_the_policy_block_prunes_a_fresh_dense_model(exported, fleet, tmp_path):
    """The block's `model` is the user's dense model: here the tiny net with the dense
    weights the run started from."""
    dense_weights = fleet.assets.dense
    preamble = ("import torch\n"
                "from rlprune.models.registry import build_model\n"
                f"model = build_model({MODEL_MODULE + ':make'!r}).eval()\n"
                f"model.load_state_dict(torch.load({str(dense_weights)!r}, "
                "weights_only=True)['state_dict'])\n")
    ((x, y),) = _run("policy", [exported], fleet, tmp_path, preamble)
    dense = _dense_net(fleet)
    dense.load_state_dict(torch.load(dense_weights, weights_only=True)["state_dict"])
    policy = rlprune.load_policy(exported / JOB / "policy.json")
    expected = rlprune.apply(policy, dense, input_shape=(1, 28, 28))(x)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(y, dense(x))  # pruned, not the dense model


def test_eval_on_a_pt2_module_as_the_readme_says(exported, pruned):
    """torch's own module from a .pt2 refuses eval() (so the README says to leave it out);
    rlprune.load_model's accepts it and changes nothing."""
    path = exported / "fp32" / "model.pt2"
    with pytest.raises(NotImplementedError):
        torch.export.load(path).module().eval()
    model = rlprune.load_model(path)
    assert model.eval() is model and model.train() is model
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), pruned(x), rtol=0, atol=1e-5)
