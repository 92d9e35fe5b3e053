"""How a job answers SIGINT and SIGTERM: a search stops at its next episode boundary (with a
checkpoint), anything else at once. Installed by whoever runs the job in its own process (the
command line, a service worker); the library itself installs no handler."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlprune.service.jobs.lifecycle import JobRunner


def stopping_message(signal_name: str) -> str:
    """What a job's log or terminal says when a first signal asks a search to stop."""
    return (f"rlprune: {signal_name}: stopping after this episode and saving a checkpoint "
            "(again to stop at once)")


class SignalStop:
    """While in use, SIGINT and SIGTERM during a search stop it after the current episode
    (with a checkpoint); a second signal, or one at any other moment (set-up, fine-tune, a
    baseline), stops at once with KeyboardInterrupt. `runner` is the job being run; `notify(name)`
    hears of a first signal (the command line says what happens next)."""

    def __init__(self, runner: JobRunner | None = None, *,
                 notify: Callable[[str], None] | None = None):
        self.runner, self.notify = runner, notify
        self._previous: dict = {}

    def _handle(self, signum: int, frame) -> None:
        runner = self.runner
        if runner is None or not runner.searching or runner.stop_requested():
            raise KeyboardInterrupt
        runner.request_stop()
        if self.notify is not None:
            self.notify(signal.Signals(signum).name)

    def __enter__(self) -> SignalStop:
        self._previous = {s: signal.signal(s, self._handle)
                          for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
