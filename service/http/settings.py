"""The service's settings (`ServeConfig`), declared with `setting()` like `SearchConfig`, so
the limits are checked in one place, whoever asks (the command line or the HTTP API)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rlprune.models.errors import SettingError
from rlprune.models.settings import check, setting

EXECUTORS = ("local", "ray")


def parse_paths(text: str) -> tuple[str, ...]:
    """`DIR[:DIR...]` (os.pathsep-separated, as PATH is)."""
    return tuple(part for part in text.split(os.pathsep) if part)


@dataclass
class ServeConfig:
    """`rlprune serve`: where the service listens, keeps its runs and reads its data."""

    host: str = setting("127.0.0.1", "Address to listen on (127.0.0.1: this machine only).")
    port: int = setting(8080, "Port to listen on.", min=1, max=65535)
    runs: str = setting("runs", "Run folders and the job registry.", metavar="DIR")
    max_running: int = setting(2, "Jobs run at once; the rest wait in order.", min=1, max=64,
                               metavar="N")
    token_file: str | None = setting(
        None, "The bearer token, made with mode 0600 on first start (default: "
        "RUNS/service-token).", metavar="PATH")
    auto_resume: bool = setting(
        True, "Interrupted jobs resume from their last checkpoint when the service starts (the "
        "default; --no-auto-resume turns it off).", negate="--no-auto-resume")
    upload_limit_mb: float = setting(256.0, "Largest weights upload, in MB.", min=0.001,
                                     max=1_000_000.0, metavar="MB")
    executor: str = setting(
        "local", "local: jobs as worker processes here; ray: jobs as Ray tasks on the cluster "
        "at --ray-address (its nodes must share --runs).", choices=EXECUTORS)
    ray_address: str | None = setting(
        None, "With --executor ray: auto, local (start one here) or host:port.",
        metavar="ADDR")
    data_roots: tuple[str, ...] = setting(
        (), "Folders a job may read data from: imagefolder:PATH inside one, cifar10/100 in the "
        "first (default: RUNS/data); a request names no other path.", flag="--data-root",
        parse=parse_paths, metavar="DIR[:DIR]")
    allow_download: bool = setting(
        False, "Jobs may ask to download cifar10/100 (into the first --data-root).")
    warm_starts: bool = setting(
        True, "Fork job workers from a process that has done their imports (ms, not seconds, "
        "per start); --no-warm-starts: a fresh interpreter each.", negate="--no-warm-starts")
    check_timeout_s: float = setting(
        120.0, "Seconds a job's user code (module:factory) gets to import, build and be "
        "checked in a child process before the job is refused.", min=1.0, max=3600.0,
        metavar="SECONDS")

    def validate(self) -> None:
        check(self)
        token = Path(self.token_file) if self.token_file else None
        if token is not None and (token.is_dir() or token.parent.is_file()):
            raise SettingError("token_file", f"{token} is a folder or lies under a file; "
                               "give a file name")
        for root in self.data_roots:
            if not Path(root).is_dir():
                raise SettingError("data_roots", f"{root} is not a folder")

    @property
    def upload_limit(self) -> int:
        return int(self.upload_limit_mb * 1024 * 1024)

    def data_dir(self) -> Path:
        """Where the service's cifar10/100 live."""
        return Path(self.data_roots[0] if self.data_roots else Path(self.runs) / "data")


