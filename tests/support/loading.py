"""The README's "Loading what you exported" blocks, run as written in a fresh interpreter.

`loading_blocks()` finds them by what each loads; `run_block(kind, folders, env=...)` runs one
in a new Python process once per folder (that folder the current one, a fresh namespace each
time) and gives back the `x` and `y` the block left: its input batch and the loaded model's
output, to compare with the exported model's own.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "Loading what you exported"
# each block by a phrase only it has
KINDS = {"rlprune": 'rlprune.load_model("model.rlprune")',
         "pt2": 'torch.export.load("model.pt2")',
         "onnx": 'onnxruntime.InferenceSession("model.onnx")',
         "policy": "rlprune.apply(policy"}

DRIVER = """\
import os, sys
import numpy as np
block, preamble, *folders = sys.argv[1:]
code = compile(open(block).read(), "README block", "exec")
for folder in folders:
    os.chdir(folder)
    space = {"__name__": "__main__"}
    exec(preamble, space)
    exec(code, space)
    out = {k: (v.detach().numpy() if hasattr(v, "detach") else np.asarray(v))
           for k, v in ((k, space[k]) for k in ("x", "y"))}
    np.savez(os.path.join(folder, "block-out.npz"), **out)
"""


def loading_blocks() -> dict[str, str]:
    """The section's Python blocks by kind (each kind exactly once, nothing else there)."""
    body = README.read_text().split(f"## {SECTION}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", body, re.S)
    found = {kind: [b for b in blocks if phrase in b] for kind, phrase in KINDS.items()}
    assert all(len(b) == 1 for b in found.values()) and len(blocks) == len(KINDS), found
    return {kind: b[0] for kind, b in found.items()}


def run_block(kind: str, folders: list[Path], *, env: dict[str, str], scratch: Path,
              preamble: str = "") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run the `kind` block in one fresh interpreter, in each folder in turn: its (x, y)."""
    (scratch / "block.py").write_text(loading_blocks()[kind])
    (scratch / "driver.py").write_text(DRIVER)
    done = subprocess.run([sys.executable, str(scratch / "driver.py"), str(scratch / "block.py"),
                           preamble, *map(str, folders)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = []
    for folder in folders:
        saved = np.load(folder / "block-out.npz")
        out.append((torch.from_numpy(saved["x"]), torch.from_numpy(saved["y"])))
    return out


def assert_int8_close(y: torch.Tensor, reference: torch.Tensor) -> None:
    """An int8 model's output against its float model's: the same class for nearly every
    image, every logit within a tenth of the largest; and not the float output itself."""
    assert y.shape == reference.shape
    assert (y.argmax(1) == reference.argmax(1)).float().mean() >= 0.95
    assert (y - reference).abs().max() <= 0.1 * reference.abs().max()
    assert not torch.equal(y, reference)  # really the int8 file
