"""The README's Python API example runs as written, and the README stays short (its
"Loading what you exported" blocks run in tests/test_loading.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
MAX_LINES = 250  # what does not fit goes to docs/


def python_blocks(section: str) -> list[str]:
    text = README.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, re.S)


def test_the_python_api_example_runs(tmp_path):
    (code,) = python_blocks("Python API")
    (tmp_path / "example.py").write_text(code)
    # one thread: beside the other xdist worker, two would only fight over the cores
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    sparsity, accuracy = done.stdout.splitlines()[0].split(" ", 1)
    assert abs(float(sparsity) - 0.9) < 1e-3
    assert "'finetuned'" in accuracy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.py"]  # nothing written


def test_the_readme_stays_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines; move detail to docs/"
