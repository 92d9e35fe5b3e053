"""Helpers of the run-level tests, imported explicitly (`from support import ...`); nothing
here is a conftest fixture.

- `assets`: the user model modules (tests/usermodels/) and a trained dense checkpoint;
- `runners`: the CLI in-process or as a subprocess, and snapshots of a folder's files;
- `forkserver`: `rlprune` processes forked from a server that has done the imports;
- `fleet`: the crash/resume scenarios, run once per session.
"""

from support.assets import *  # noqa: F403
from support.assets import _CACHE  # noqa: F401
from support.fleet import *  # noqa: F403
from support.forkserver import *  # noqa: F403
from support.runners import *  # noqa: F403
