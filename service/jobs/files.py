"""Files the service reads and writes: atomic text and JSON, and policy files (JSON or YAML)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from rlprune.models.errors import SettingError, UserError

POLICY_FORMATS = ("json", "yaml")


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary name, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def policy_text(policy: dict, fmt: str = "json") -> str:
    if fmt not in POLICY_FORMATS:
        raise UserError(f"format must be one of {', '.join(POLICY_FORMATS)}, got {fmt!r}")
    if fmt == "json":
        return json.dumps(policy, indent=2) + "\n"
    import yaml

    return yaml.safe_dump(policy, sort_keys=False)


def save_policy(policy: dict, path: str | Path, fmt: str = "json") -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, policy_text(policy, fmt))


def load_policy(path: str | Path) -> dict:
    """A policy file (JSON or YAML), checked (`validate_policy`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"policy {path} does not exist")
    import yaml

    try:
        # YAML is a superset of JSON, so one reader takes both formats.
        policy = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"policy {path} is not JSON or YAML ({exc.__class__.__name__})") from None
    from rlprune.env.policy import validate_policy  # torch: not for the CLI's client commands

    return validate_policy(policy, f"policy {path}")


def require_writable_folder(folder: str | Path, what: str) -> None:
    """Refuse, before any work, a folder that cannot be created or written (a probe is
    written and removed; folders made for it are removed again)."""
    _probe(Path(folder), what)


def _probe(folder: Path, what: str) -> None:
    """Make sure `folder` can be created (with its parents) and written in, by doing it and
    undoing it: nothing is left behind."""
    missing, anchor = [], folder
    while not anchor.exists():
        if anchor.is_symlink():
            raise UserError(f"{what}: {anchor} is a broken link")
        missing.append(anchor)
        anchor = anchor.parent
    if not anchor.is_dir():
        raise UserError(f"{what}: {anchor} is a file, not a folder")
    made = []
    try:
        for path in reversed(missing):
            path.mkdir()
            made.append(path)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".rlprune-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{what}: cannot write in {folder} ({exc.strerror or exc})") from None
    finally:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir()


def require_empty_folder(path: str | Path | None, field: str) -> None:
    """Refuse, before any work, an output folder that holds anything, is a file, or cannot be
    created and written: nothing gets overwritten, and nothing is left behind. `field` is the
    setting that named the folder (`run_dir`), for the refusal."""
    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SettingError(field, f"{path} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise SettingError(field, f"{path} is not empty; choose another (or `rlprune resume` a "
                           "run)")
    _probe_for(field, path, path)


def refuse_existing(path: Path, force: bool, field: str = "out") -> None:
    """Refuse, before any work, an output file that exists (unless `force`), is a folder, or
    whose folder cannot be created and written. `field` is the setting that named the file."""
    if path.is_dir():
        raise SettingError(field, f"{path} is a folder; give a file name")
    if (path.exists() or path.is_symlink()) and not force:
        raise SettingError(field, f"{path} exists; pass `force` to overwrite it",
                           others=("force",), lead=False)
    _probe_for(field, path.parent, path)


def _probe_for(field: str, folder: Path, path: Path) -> None:
    """`_probe`, its refusal naming the setting that named `path`."""
    try:
        _probe(folder, str(path))
    except UserError as exc:
        raise SettingError(field, str(exc)) from None
