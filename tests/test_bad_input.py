"""Bad input, command by command: one line on stderr, exit code 2, no traceback, and nothing
new written or overwritten (the whole working folder is compared before and after).

Each case is (id, the command line, words the line must hold). `{...}` names a file the
fixture made: the dense weights, policies, a finished and an interrupted run, and so on.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support import (
    MODEL_MODULE,
    OTHER_MODULE,
    assert_one_line_error,
    copy_run,
    get_assets,
    get_fleet,
    read_json,
    run_main,
    snapshot,
)

from rlprune.agent.config import SearchConfig

TINY = ("--model", f"{MODEL_MODULE}:make", "--dataset", "digits", "--weights", "{dense}",
        "--quiet")
SEARCH = ("search", *TINY, "--fc-k", "1")
BAD = "rlprune_bad_models"

CASES = [
    # -- settings of a search (checked before any work) ------------------------------------
    ("target text", [*SEARCH, "--target", "abc"], "--target"),
    ("target 1.5", [*SEARCH, "--target", "1.5"], "--target must be in (0, 1)"),
    ("target 0", [*SEARCH, "--target", "0"], "--target must be in (0, 1)"),
    ("target nan", [*SEARCH, "--target", "nan"], "--target must be in (0, 1)"),
    ("target inf", [*SEARCH, "--target", "inf"], "--target must be in (0, 1)"),
    ("target negative", [*SEARCH, "--target", "-0.1"], "--target"),
    ("episodes 0", [*SEARCH, "--episodes", "0"], "--episodes must be at least 1"),
    ("episodes negative", [*SEARCH, "--episodes", "-3"], "--episodes"),
    ("episodes 1e3", [*SEARCH, "--episodes", "1e3"], "--episodes"),
    ("warmup negative", [*SEARCH, "--warmup", "-1"], "--warmup"),
    ("warmup over episodes", [*SEARCH, "--episodes", "5", "--warmup", "9"],
     "--warmup (9) must not be more than the episodes (5)"),
    ("checkpoint-every 0", [*SEARCH, "--checkpoint-every", "0"], "--checkpoint-every"),
    ("finetune-epochs negative", [*SEARCH, "--finetune-epochs", "-1"], "--finetune-epochs"),
    ("bn-recalibration negative", [*SEARCH, "--bn-recalibration", "-2"], "--bn-recalibration"),
    ("bn-batch-size 0", [*SEARCH, "--bn-batch-size", "0"], "--bn-batch-size"),
    ("eval-batch-size 0", [*SEARCH, "--eval-batch-size", "0"], "--eval-batch-size"),
    ("hidden 0", [*SEARCH, "--hidden", "0,5"], "--hidden"),
    ("hidden text", [*SEARCH, "--hidden", "a,b"], "--hidden"),
    ("hidden empty", [*SEARCH, "--hidden", ""], "--hidden"),
    ("seed policy unknown", [*SEARCH, "--seed-policies", "lamp,bogus"], "--seed-policies"),
    ("fc-k 0", [*SEARCH, "--fc-k", "0"], "--fc-k"),
    ("fc-k negative", [*SEARCH, "--fc-k", "-1"], "--fc-k"),
    ("fc-k text", [*SEARCH, "--fc-k", "abc"], "--fc-k"),
    ("s-max 2", [*SEARCH, "--s-max", "2"], "s_max"),
    ("s-max text", [*SEARCH, "--s-max", "abc"], "--s-max"),
    ("s-min over s-max", [*SEARCH, "--s-min", "0.995"], "s_min"),
    ("reward unknown", [*SEARCH, "--reward", "vibes"], "--reward"),
    ("reward without value", [*SEARCH, "--reward"], "--reward"),
    ("device tpu", [*SEARCH, "--device", "tpu"], "--device"),
    ("noise-decay 2", [*SEARCH, "--noise-decay", "2"], "--noise-decay must be at most 1"),
    ("tau negative", [*SEARCH, "--tau", "-1"], "--tau"),
    ("batch-size 0", [*SEARCH, "--batch-size", "0"], "--batch-size"),
    ("learning-rate negative", [*SEARCH, "--learning-rate", "-1"], "--learning-rate"),
    ("buffer-episodes 0", [*SEARCH, "--buffer-episodes", "0"], "--buffer-episodes"),
    ("seed negative", [*SEARCH, "--seed", "-1"], "--seed"),
    ("scope unknown", [*SEARCH, "--scope", "all"], "--scope"),
    ("fc-rule unknown", [*SEARCH, "--fc-rule", "x"], "--fc-rule"),
    ("action mapping unknown", [*SEARCH, "--action-mapping", "relative"], "--action-mapping"),
    ("unknown flag", [*SEARCH, "--no-such-flag"], "unrecognized arguments"),
    ("unknown command", ["no-such-command"], "invalid choice"),
    # -- data -------------------------------------------------------------------------------
    ("dataset unknown", ["search", "--dataset", "nope"], "unknown dataset 'nope'"),
    ("imagefolder missing", ["search", "--dataset", "imagefolder:/no/such/folder"],
     "not a folder"),
    ("imagefolder empty", ["search", "--dataset", "imagefolder:{empty_folder}"],
     "0 class sub-folders"),
    ("imagefolder one class", ["search", "--dataset", "imagefolder:{one_class}"],
     "1 class sub-folders"),
    ("imagefolder no images", ["search", "--dataset", "imagefolder:{no_images}"],
     "Found no valid file"),
    ("data factory not importable", ["search", "--dataset", "rlprune_no_such_data:make"],
     "cannot import"),
    ("data factory fails", ["search", "--dataset", f"{BAD}:raises"], "the factory failed"),
    ("data factory wrong shape", ["search", "--dataset", f"{BAD}:data_not_three"],
     "must return (train, val, test)"),
    ("data of one class", ["search", "--model", f"{MODEL_MODULE}:make", "--dataset",
                           f"{BAD}:data_of_one_class"], "at least two classes"),
    # -- models and their weights -----------------------------------------------------------
    ("model unknown", ["search", "--model", "nope"], "unknown model 'nope'"),
    ("model not importable", ["search", "--model", "rlprune_no_such_net:make"],
     "cannot import"),
    ("model factory not a module", ["search", "--model", f"{BAD}:not_a_module"],
     "not a torch.nn.Module"),
    ("model factory fails", ["search", "--model", f"{BAD}:raises"], "the factory failed"),
    ("model without layers", ["search", "--model", f"{BAD}:no_layers", "--dataset", "digits"],
     "nothing to prune"),
    ("model without parameters", ["search", "--model", f"{BAD}:no_params", "--dataset",
                                  "digits"], "nothing to prune"),
    ("model with too few outputs", ["search", "--model", f"{BAD}:five_classes", "--dataset",
                                    "digits"], "5 outputs but digits has 10 classes"),
    ("model taking other images", ["search", "--model", f"{BAD}:wrong_input", "--dataset",
                                   "digits"], "cannot take digits's images"),
    ("weights missing", ["search", *TINY[:4], "--weights", "missing.pt"], "does not exist"),
    ("weights a folder", ["search", *TINY[:4], "--weights", "{folder}"], "is a folder"),
    ("weights binary", ["search", *TINY[:4], "--weights", "{binary}"], "cannot be read"),
    ("weights text", ["search", *TINY[:4], "--weights", "{text}"], "cannot be read"),
    ("weights a list", ["search", *TINY[:4], "--weights", "{torch_list}"],
     "holds no state_dict"),
    ("weights of another model", ["search", *TINY[:4], "--weights", "{other}"],
     "does not fit the model"),
    # -- where results go -------------------------------------------------------------------
    ("run-dir under a file", [*SEARCH, "--run-dir", "{text}/run"], "is a file, not a folder"),
    ("run-dir a file", [*SEARCH, "--run-dir", "{text}"], "is a file, not a folder"),
    ("run-dir not empty", [*SEARCH, "--run-dir", "{folder}"], "is not empty"),
    ("run-dir in /proc", [*SEARCH, "--run-dir", "/proc/rlprune-run"], "cannot write"),
    ("run-dir in /sys", [*SEARCH, "--run-dir", "/sys/rlprune-run"], "cannot write"),
    ("run-dir in a locked folder", [*SEARCH, "--run-dir", "{immutable}/run"], "cannot write"),
    ("runs/ a file", ["baseline", "--method", "lamp", *TINY, "--fc-k", "1"],
     "runs/: runs is a file", "runs_file"),
    ("baseline run-dir in /proc", ["baseline", "--method", "lamp", *TINY, "--run-dir",
                                   "/proc/x"], "cannot write"),
    ("baseline method unknown", ["baseline", "--method", "magic", *TINY], "--method"),
    # -- pretrain ---------------------------------------------------------------------------
    ("pretrain epochs 0", ["pretrain", "--model", "lenet300", "--dataset", "digits",
                           "--epochs", "0", "--out", "x.pt"], "--epochs"),
    ("pretrain epochs text", ["pretrain", "--epochs", "abc"], "--epochs"),
    ("pretrain out exists", ["pretrain", "--model", "lenet300", "--dataset", "digits",
                             "--out", "{text}"], "pass --force"),
    ("pretrain out a folder", ["pretrain", "--model", "lenet300", "--dataset", "digits",
                               "--out", "{folder}", "--force"], "is a folder"),
    ("pretrain out under a file", ["pretrain", "--model", "lenet300", "--dataset", "digits",
                                   "--out", "{text}/x.pt"], "is a file, not a folder"),
    ("pretrain out in /proc", ["pretrain", "--model", "lenet300", "--dataset", "digits",
                               "--out", "/proc/x.pt"], "cannot write"),
    ("pretrain device unknown", ["pretrain", "--device", "tpu"], "--device"),
    # -- export -----------------------------------------------------------------------------
    ("export no run", ["export", "no-such-run"], "no run at no-such-run"),
    ("export a file", ["export", "{text}"], "no run at"),
    ("export out exists", ["export", "{finished}", "--out", "{text}"], "pass --force"),
    ("export out a folder", ["export", "{finished}", "--out", "{folder}", "--force"],
     "is a folder"),
    ("export out in /proc", ["export", "{finished}", "--out", "/proc/p.json"], "cannot write"),
    ("export out under a file", ["export", "{finished}", "--out", "{text}/p.json"],
     "is a file, not a folder"),
    ("export format unknown", ["export", "{finished}", "--format", "xml"], "--format"),
    ("export a run without policy", ["export", "{interrupted}"], "has no policy yet"),
    # -- apply ------------------------------------------------------------------------------
    ("apply policy missing", ["apply", "nope.json", *TINY[:2], "--weights", "{dense}",
                              "--out", "o.pt"], "does not exist"),
    ("apply without weights", ["apply", "{policy}", *TINY[:2], "--out", "o.pt"],
     "--weights PATH"),
    ("apply out exists", ["apply", "{policy}", *TINY[:2], "--weights", "{dense}", "--out",
                          "{text}"], "pass --force"),
    ("apply out a folder", ["apply", "{policy}", *TINY[:2], "--weights", "{dense}", "--out",
                            "{folder}", "--force"], "is a folder"),
    ("apply finetune negative", ["apply", "{policy}", *TINY[:2], "--weights", "{dense}",
                                 "--out", "o.pt", "--finetune-epochs", "-1"],
     "--finetune-epochs"),
    ("apply to another model", ["apply", "{policy}", "--model", f"{OTHER_MODULE}:make",
                                "--weights", "{other}", "--out", "o.pt"],
     "policy does not fit the model"),
    # -- bench ------------------------------------------------------------------------------
    ("bench target 1.5", ["bench", *TINY, "--targets", "1.5", "--out", "b"], "--target"),
    ("bench target text", ["bench", *TINY, "--targets", "abc", "--out", "b"], "--targets"),
    ("bench method unknown", ["bench", *TINY, "--methods", "ddpg,bogus", "--out", "b"],
     "unknown method"),
    ("bench seeds 0", ["bench", *TINY, "--seeds", "0", "--out", "b"], "--seeds"),
    ("bench first seed negative", ["bench", *TINY, "--first-seed", "-1", "--out", "b"],
     "--first-seed"),
    ("bench episodes 0", ["bench", *TINY, "--episodes", "0", "--out", "b"], "--episodes"),
    ("bench warmup over episodes", ["bench", *TINY, "--episodes", "4", "--warmup", "5",
                                    "--out", "b"], "--warmup"),
    ("bench out not empty", ["bench", *TINY, "--out", "{folder}"], "is not empty"),
    ("bench out in /proc", ["bench", *TINY, "--out", "/proc/b"], "cannot write"),
    ("bench merge missing", ["bench", "--merge", "nope.json", "--out", "m"],
     "not a readable bench.json"),
    ("bench merge binary", ["bench", "--merge", "{binary}", "--out", "m"],
     "not a readable bench.json"),
    ("bench merge bad rename", ["bench", "--merge", "{text}:ddpg", "--out", "m"],
     "PATH:OLD=NEW"),
    ("bench merge not a bench", ["bench", "--merge", "{finished}/config.json", "--out", "m"],
     "not a readable bench.json"),
    # -- resume, status, inspect -------------------------------------------------------------
    ("resume no run", ["resume", "no-such-run"], "no run at"),
    ("resume a file", ["resume", "{text}"], "no run at"),
    ("resume finished", ["resume", "{finished}"], "is finished"),
    ("resume episodes 0", ["resume", "{interrupted}", "--episodes", "0"], "--episodes"),
    ("resume episodes text", ["resume", "{interrupted}", "--episodes", "abc"], "--episodes"),
    ("resume episodes below done", ["resume", "{interrupted}", "--episodes", "2"],
     "fewer than the"),
    ("status no run", ["status", "no-such-run"], "no run at"),
    ("inspect model unknown", ["inspect", "--model", "nope"], "unknown model"),
    ("inspect dataset unknown", ["inspect", "--dataset", "nope"], "unknown dataset"),
    ("inspect fc-rule unknown", ["inspect", "--fc-rule", "bogus"], "--fc-rule"),
]
POLICY_EDITS = {
    "binary": None,
    "sparsity text": lambda p: p["layers"][0].update(sparsity="abc"),
    "sparsity null": lambda p: p["layers"][0].update(sparsity=None),
    "sparsity 1.5": lambda p: p["layers"][0].update(sparsity=1.5),
    "sparsity true": lambda p: p["layers"][0].update(sparsity=True),
    "params 0": lambda p: p["layers"][0].update(params=0),
    "params text": lambda p: p["layers"][0].update(params="many"),
    "no layers": lambda p: p.pop("layers"),
    "layers a number": lambda p: p.update(layers=5),
    "layers empty": lambda p: p.update(layers=[]),
    "a layer a string": lambda p: p["layers"].append("c9"),
    "layer without a name": lambda p: p["layers"][0].pop("name"),
    "dataset null": lambda p: p.update(dataset=None),
    "method missing": lambda p: p.pop("method"),
    "owner unknown": lambda p: p["layers"][0].update(owner="someone"),
    "layer twice": lambda p: p["layers"].append(dict(p["layers"][0])),
    "format other": lambda p: p.update(format="something/else"),
    "target missing": lambda p: p.pop("target"),
    "a list": lambda p: p.clear() or None,
}


@pytest.fixture
def ctx(tmp_path_factory, tmp_path, monkeypatch):
    """The working folder, with the files the cases name; the tests' user models importable."""
    assets = get_assets(tmp_path_factory)
    fleet = get_fleet(tmp_path_factory)
    monkeypatch.syspath_prepend(str(assets.models))
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    (tmp_path / "text.txt").write_text("not a model\n")
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 4)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "x").write_text("x")
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "one_class" / "a").mkdir(parents=True)
    for name in ("a", "b"):
        (tmp_path / "no_images" / name).mkdir(parents=True)
        (tmp_path / "no_images" / name / "readme.txt").write_text("no image here")
    finished = copy_run(fleet.run("a"), tmp_path / "finished")
    copy_run(fleet.copies / "b", tmp_path / "interrupted")
    shutil.copy(finished / "policy.json", tmp_path / "policy.json")
    immutable = tmp_path / "immutable"
    immutable.mkdir()
    locked = subprocess.run(["chattr", "+i", str(immutable)], capture_output=True).returncode == 0
    paths = {"dense": str(assets.dense), "other": str(assets.other_dense),
             "text": "text.txt", "binary": "binary.bin", "torch_list": "list.pt",
             "folder": "folder", "empty_folder": "empty_folder", "one_class": "one_class",
             "no_images": "no_images", "finished": "finished", "interrupted": "interrupted",
             "policy": "policy.json", "immutable": "immutable"}
    yield tmp_path, paths, locked
    if locked:
        subprocess.run(["chattr", "-i", str(immutable)], check=True)


def _refused(capsys, workdir, argv, words):
    before = snapshot(workdir)
    code, out, err = run_main(capsys, *argv)
    assert_one_line_error(code, err)
    assert out == ""
    assert words in err, err
    assert snapshot(workdir) == before  # nothing new, nothing overwritten
    return err


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_exit_2(case, ctx, capsys):
    workdir, paths, locked = ctx
    name, argv, words, *setup = case
    if "immutable" in " ".join(argv) and not locked:
        pytest.skip("chattr +i is not available here (needs a filesystem and CAP that allow it)")
    if setup == ["runs_file"]:
        (workdir / "runs").write_text("a file where runs/ should be")
    _refused(capsys, workdir, [arg.format(**paths) for arg in argv], words)


def test_device_cuda_without_a_gpu(ctx, capsys):
    workdir, paths, _ = ctx
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    argv = [arg.format(**paths) for arg in (*SEARCH, "--device", "cuda")]
    _refused(capsys, workdir, argv, "torch sees no CUDA device")


@pytest.mark.parametrize("edit", sorted(POLICY_EDITS))
def test_a_malformed_policy_is_refused_before_anything_is_written(edit, ctx, capsys):
    workdir, paths, _ = ctx
    path = workdir / "bad-policy.json"
    if edit == "binary":
        path.write_bytes(bytes(range(256)))
    else:
        policy = read_json(workdir / "policy.json")
        changed = POLICY_EDITS[edit](policy)
        path.write_text(json.dumps([] if edit == "a list" else policy if changed is None
                                   else policy))
    argv = ["apply", str(path), "--model", f"{MODEL_MODULE}:make", "--weights", paths["dense"],
            "--out", "o.pt"]
    err = _refused(capsys, workdir, argv, str(path))
    assert "policy" in err


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(
    st.sampled_from([f.name for f in dataclasses.fields(SearchConfig)] + ["bogus"]),
    st.none() | st.booleans() | st.integers(-5, 500) | st.floats(allow_nan=True)
    | st.text(max_size=8) | st.lists(st.integers(-2, 300) | st.text(max_size=3), max_size=3),
    max_size=6))
def test_any_settings_are_a_valid_config_or_one_user_error(settings_):
    """What the Python API (keyword arguments) and config.json (from_json) let through is a
    config that validates; anything else is a UserError, never another exception."""
    from rlprune.models.errors import UserError

    for make in (lambda: SearchConfig.with_settings(**settings_),
                 lambda: SearchConfig.from_json(settings_)):
        try:
            config = make()
            config.validate()
        except UserError:
            continue
        assert 0 < config.target < 1 and config.warmup <= config.episodes


def test_a_write_that_fails_leaves_no_partial_file(tmp_path, monkeypatch):
    """Files are written to a hidden temporary name and renamed; a failure on the way
    removes the temporary file and leaves the old file as it was."""
    from rlprune.models.train import save_weights
    from rlprune.service.jobs.files import write_text_atomic

    target = tmp_path / "status.json"
    target.write_text("old")

    class Full(OSError):
        pass

    def fail(*args, **kwargs):
        raise Full(28, "No space left on device")

    monkeypatch.setattr("pathlib.Path.write_text", fail)
    with pytest.raises(Full):
        write_text_atomic(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]
    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(Full):
        save_weights(tmp_path / "w.pt", torch.nn.Linear(2, 2), {})
    assert sorted(tmp_path.iterdir()) == [target]


def test_a_read_only_run_dir_is_refused(ctx, capsys):
    """Only where permissions bind (not for root, whom they do not stop: the immutable-folder
    case above covers root)."""
    import os

    workdir, paths, _ = ctx
    if os.geteuid() == 0:
        pytest.skip("root is not stopped by a read-only mode")
    (workdir / "ro").mkdir()
    (workdir / "ro").chmod(0o555)
    try:
        argv = [arg.format(**paths) for arg in (*SEARCH, "--run-dir", "ro/run")]
        _refused(capsys, workdir, argv, "cannot write")
    finally:
        (workdir / "ro").chmod(0o755)
