"""A fork server for the tests: `rlprune` processes without paying the imports each time.

It is the service's own warm server (`rlprune.service.http.warm_start`), asked for children that
each run `rlprune.service.cli.main(argv)` in a session of their own."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from rlprune.service.http.warm_start import WarmChild, WarmStarter
from support.assets import PROCESS_TIMEOUT, Assets
from support.runners import Done


class Child:
    """A forked `rlprune` process, with the parts of Popen the tests use."""

    def __init__(self, process: WarmChild, argv: list[str], out: Path, err: Path):
        self.process, self.pid, self.args, self.out, self.err = process, process.pid, argv, out, err

    def poll(self) -> int | None:
        return self.process.poll()

    def kill(self) -> None:
        self.process.kill()


class ForkServer:
    def __init__(self, assets: Assets, logs: Path):
        self.logs, self.starter = logs, WarmStarter(assets.env())
        self._ids = itertools.count(1)

    def spawn(self, cwd: Path, *argv: str) -> Child:
        if not self.starter.wait_for(lambda: self.starter.ready, PROCESS_TIMEOUT):
            pytest.fail(f"fork server: not ready within {PROCESS_TIMEOUT} s "
                        f"(exit code {self.starter.proc.poll()})")
        rid = next(self._ids)
        out, err = self.logs / f"{rid}.out", self.logs / f"{rid}.err"
        child = self.starter.spawn("rlprune.service.cli.main", list(argv), cwd=cwd, out=out,
                                   err=err)
        return Child(child, list(argv), out, err)

    def finish(self, child: Child, timeout: float = PROCESS_TIMEOUT) -> Done:
        try:
            code = child.process.wait(timeout)
        except BaseException:
            child.kill()
            raise
        return Done(tuple(child.args), child.pid, code, child.out.read_text(),
                    child.err.read_text())

    def close(self) -> None:
        self.starter.close()
