"""Tensors stored sparse: a bitmask of the non-zero entries and their values, bit for bit.

A tensor with zeros is stored as its shape, dtype, a packed bitmask (one bit per entry) and
the raw bytes of the entries the mask marks; one without is stored raw. "Zero" means all
bits zero, so a -0.0 is kept as a value and decoding gives back exactly the same bits.
`pack` / `unpack` turn a whole state_dict into a dict of bytes (for a compressed archive).
"""

from __future__ import annotations

import json

import numpy as np
import torch

_INT_VIEW = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _raw(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's entries as unsigned integers of the same width (its exact bits)."""
    t = tensor.detach().cpu().contiguous()
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    width = t.element_size()
    return t.view(_dtype_of_width(width)).numpy().view(_INT_VIEW[width]).reshape(-1)


def _dtype_of_width(width: int) -> torch.dtype:
    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[width]


def encode(tensor: torch.Tensor) -> tuple[dict, dict[str, bytes]]:
    """(header, blobs): header has dtype, shape and the encoding; blobs the bytes."""
    bits = _raw(tensor)
    header = {"dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape)}
    nonzero = bits != 0
    if bits.size and nonzero.mean() < 0.75:  # a bitmask pays for itself below ~3/4 dense
        header["encoding"] = "mask"
        return header, {"mask": np.packbits(nonzero).tobytes(),
                        "values": bits[nonzero].tobytes()}
    header["encoding"] = "raw"
    return header, {"values": bits.tobytes()}


def decode(header: dict, blobs: dict[str, bytes]) -> torch.Tensor:
    dtype = getattr(torch, header["dtype"])
    shape = header["shape"]
    width = torch.empty((), dtype=dtype).element_size()
    unsigned = _INT_VIEW[width]
    count = int(np.prod(shape)) if shape else 1
    values = np.frombuffer(blobs["values"], dtype=unsigned)
    if header["encoding"] == "mask":
        mask = np.unpackbits(np.frombuffer(blobs["mask"], dtype=np.uint8), count=count)
        bits = np.zeros(count, dtype=unsigned)
        bits[mask.astype(bool)] = values
    else:
        bits = values.copy()
    out = torch.from_numpy(bits.view(_signed(unsigned))).view(
        torch.uint8 if dtype == torch.bool else dtype)
    out = out.to(torch.bool) if dtype == torch.bool else out
    return out.reshape(shape)


def _signed(unsigned: type) -> type:
    signed: dict[type, type] = {np.uint8: np.uint8, np.uint16: np.int16, np.uint32: np.int32,
                                np.uint64: np.int64}
    return signed[unsigned]


def pack(state: dict[str, torch.Tensor]) -> dict[str, bytes]:
    """A state_dict as named byte strings: `index.json` and two blobs per tensor."""
    index, files = [], {}
    for i, (name, tensor) in enumerate(state.items()):
        header, blobs = encode(tensor)
        index.append({"name": name, **header})
        for kind, data in blobs.items():
            files[f"t{i}.{kind}"] = data
    files["index.json"] = json.dumps(index).encode()
    return files


def unpack(files: dict[str, bytes]) -> dict[str, torch.Tensor]:
    index = json.loads(files["index.json"])
    state = {}
    for i, header in enumerate(index):
        blobs = {kind: files[f"t{i}.{kind}"] for kind in ("mask", "values")
                 if f"t{i}.{kind}" in files}
        state[header["name"]] = decode(header, blobs)
    return state
