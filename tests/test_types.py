"""The static type check: mypy over the package, configured in pyproject.toml ([tool.mypy]:
`packages = ["rlprune"]`, run from the repository root so that the rlprune/ symlinks resolve
rlprune.models, .env, .agent and .service to the folders). CI runs only pytest, so the check
is a test. Its cache is the default .mypy_cache/ of the repository (cold: about 12 s of CPU).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_mypy_finds_no_issue_in_the_package():
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"mypy failed:\n{done.stdout}{done.stderr}"
