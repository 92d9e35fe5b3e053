"""`rlprune search` with bad input: exit code 2, one line on stderr, no traceback, and no run
folder (nor anything else) written. Runs in-process in an empty working directory."""

from __future__ import annotations

import pytest
from support import (
    FC_HEAVY_MODULE,
    MODEL_MODULE,
    assert_one_line_error,
    get_assets,
    one_torch_thread,
    run_main,
    snapshot,
)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return get_assets(tmp_path_factory)


@pytest.fixture
def workdir(tmp_path, monkeypatch, assets):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(assets.models))
    with one_torch_thread():
        yield tmp_path


def search(capsys, assets, *argv: str, model: str | None = None,
           checkpoint: str | None = None) -> str:
    """`rlprune search` on the tiny model with `argv` overriding; must fail cleanly."""
    args = ["search", "--model", model or f"{MODEL_MODULE}:make", "--dataset", "digits",
            "--checkpoint", checkpoint or str(assets.dense), "--target", "0.5",
            "--episodes", "4", "--warmup", "2", "--finetune-epochs", "0", "--quiet",
            *argv]
    code, out, err = run_main(capsys, *args)
    assert_one_line_error(code, err)
    assert out == ""
    return err


def assert_nothing_written(workdir) -> None:
    assert sorted(p.name for p in workdir.rglob("*")) == []


@pytest.mark.parametrize(("target", "says"), [("1.5", "(0, 1)"), ("0", "(0, 1)"),
                                              ("1", "(0, 1)"), ("-0.2", "(0, 1)"),
                                              ("abc", "'abc'"), ("nan", "(0, 1)")])
def test_bad_target(capsys, assets, workdir, target, says):
    err = search(capsys, assets, "--target", target)
    assert "target" in err and says in err
    assert_nothing_written(workdir)


def test_unknown_model(capsys, assets, workdir):
    err = search(capsys, assets, model="no-such-net")
    assert "unknown model 'no-such-net'" in err
    assert "lenet5" in err and "vgg-mini" in err  # the choices are listed
    assert_nothing_written(workdir)


def test_unknown_dataset(capsys, assets, workdir):
    err = search(capsys, assets, "--dataset", "no-such-data")
    assert "unknown dataset 'no-such-data'" in err and "digits" in err
    assert_nothing_written(workdir)


@pytest.mark.parametrize("spec", ["rlprune_agent_no_such_module:make",
                                  f"{MODEL_MODULE}:no_such_factory"])
def test_model_path_that_does_not_import(capsys, assets, workdir, spec):
    err = search(capsys, assets, model=spec)
    assert spec in err
    assert_nothing_written(workdir)


def test_checkpoint_that_does_not_fit_names_the_keys(capsys, assets, workdir):
    err = search(capsys, assets, checkpoint=str(assets.other_dense))
    assert "does not fit" in err
    assert "c1.weight" in err  # missing from the checkpoint
    assert "conv_a.weight" in err  # in the checkpoint, not in the model
    assert_nothing_written(workdir)


def test_checkpoint_that_does_not_exist(capsys, assets, workdir):
    err = search(capsys, assets, checkpoint=str(workdir / "missing.pt"))
    assert "missing.pt" in err
    assert_nothing_written(workdir)


@pytest.mark.parametrize(("flags", "says"), [(("--episodes", "0"), "--episodes"),
                                             (("--episodes", "-3"), "--episodes"),
                                             (("--checkpoint-every", "0"), "--checkpoint-every"),
                                             (("--warmup", "-1"), "--warmup"),
                                             (("--finetune-epochs", "-1"), "--finetune-epochs"),
                                             (("--fc-k", "0"), "--fc-k"),
                                             (("--episodes", "many"), "--episodes")])
def test_bad_numbers(capsys, assets, workdir, flags, says):
    err = search(capsys, assets, *flags)
    assert says in err
    assert_nothing_written(workdir)


def test_infeasible_target_fc_rule_alone_exceeds_it(capsys, assets, workdir):
    """FC layers hold 8,040 of 8,112 weights and k=3 prunes nearly all of them: over 0.5."""
    err = search(capsys, assets, "--fc-k", "3", model=f"{FC_HEAVY_MODULE}:make",
                 checkpoint=str(assets.fc_heavy_dense))
    assert "FC rule" in err and "0.5" in err
    assert_nothing_written(workdir)


def test_infeasible_target_above_what_the_agent_can_reach(capsys, assets, workdir):
    """With dense FC layers (--fc-rule none) holding 15% of the weights, 0.9 is out of reach."""
    err = search(capsys, assets, "--fc-rule", "none", "--target", "0.9")
    assert "0.9" in err
    assert err.rstrip().endswith("or lower --target")  # the refusal names its fix
    assert "--fc-rule agent" in err
    assert_nothing_written(workdir)


def test_fc_k_auto_that_finds_no_k_says_to_prune_every_layer(capsys, assets, workdir):
    """FC-heavy net at 0.9: no k both fits and keeps the proxy; the way on is named."""
    err = search(capsys, assets, "--target", "0.9", model=f"{FC_HEAVY_MODULE}:make",
                 checkpoint=str(assets.fc_heavy_dense))
    assert "--fc-k auto found no usable k" in err
    assert err.rstrip().endswith("or give a fixed --fc-k (a smaller k prunes the FC layers "
                                 "harder)"), err
    assert "--fc-rule agent" in err
    assert_nothing_written(workdir)


@pytest.mark.parametrize("content", ["file", "hidden-file", "folder"])
def test_run_dir_that_is_not_empty(capsys, assets, workdir, content):
    run = workdir / "taken"
    run.mkdir()
    if content == "file":
        (run / "notes.txt").write_text("mine\n")
    elif content == "hidden-file":
        (run / ".keep").write_text("")
    else:
        (run / "sub").mkdir()
    before = snapshot(workdir)
    err = search(capsys, assets, "--run-dir", str(run))
    assert "not empty" in err and "taken" in err
    assert snapshot(workdir) == before


def test_run_dir_that_is_a_file(capsys, assets, workdir):
    (workdir / "afile").write_text("x")
    before = snapshot(workdir)
    err = search(capsys, assets, "--run-dir", str(workdir / "afile"))
    assert "afile" in err
    assert snapshot(workdir) == before
