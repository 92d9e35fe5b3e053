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

    host: str = setting("127.0.0.1", "Address to listen on (127.0.0.1: this machine only).",
                        section="service")
    port: int = setting(8080, "Port to listen on.", min=1, max=65535, section="service")
    runs: str = setting("runs", "Run folders and the job registry.", metavar="DIR",
                        section="service")
    max_running: int = setting(2, "Jobs run at once; the rest wait in order.", min=1, max=64,
                               metavar="N", section="jobs")
    token_file: str | None = setting(
        None, "The bearer token, made with mode 0600 on first start (default: "
        "RUNS/service-token).", metavar="PATH", section="service")
    auto_resume: bool = setting(
        True, "Leave interrupted jobs as they are at start (default: resume them from their "
        "last checkpoint).", negate="--no-auto-resume", section="jobs")
    upload_limit_mb: float = setting(256.0, "Largest weights upload, in MB.", min=0.001,
                                     max=1_000_000.0, metavar="MB", section="service")
    executor: str = setting(
        "local", "local: jobs as worker processes here; ray: Ray tasks at --ray-address (nodes "
        "share --runs).", choices=EXECUTORS, section="jobs")
    ray_address: str | None = setting(
        None, "With --executor ray: auto, local (start one here) or host:port.",
        metavar="ADDR", section="jobs")
    data_roots: tuple[str, ...] = setting(
        (), "Folders jobs may read data from (default: RUNS/data); a request names no other "
        "path.", flag="--data-root", parse=parse_paths, metavar="DIR[:DIR]", section="service")
    allow_download: bool = setting(
        False, "Jobs may ask to download cifar10/100 (into the first --data-root).",
        section="service")
    warm_starts: bool = setting(
        True, "Start each job worker as a fresh interpreter (default: forked, imports done).",
        negate="--no-warm-starts", section="jobs")
    check_timeout_s: float = setting(
        120.0, "Seconds a job's user code (module:factory) gets to be imported and checked.",
        min=1.0, max=3600.0, metavar="SECONDS", section="jobs")

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


