"""Test helpers for the official parity fixtures in ``tests/fixtures/parity``.

The fixtures were produced with deterministic weights: every tensor is generated from its
state-dict key and shape alone (legacy numpy ``RandomState(crc32(key))``, drawn in float64,
cast to float32): conv weights ``N(0,1) * 0.75 * sqrt(2 / fan_in)``, BatchNorm weights
``1 + 0.1 N(0,1)``, biases and running means ``0.1 N(0,1)``, running variances ``U(0.5, 1.5)``,
``num_batches_tracked`` 0.  BiRefNet adds: 2-d ``*.weight`` (``nn.Linear``, ``(out, in)``) as a
1x1 conv ``N(0,1) * 0.75 * sqrt(2 / in)``; ``*.relative_position_bias_table`` ``N(0, 1)``;
``*.relative_position_index`` (int64, ``(w*w, w*w)``) the Swin index
``(hi - hj + w - 1) * (2w - 1) + (wi - wj + w - 1)``, not random.
"""
from __future__ import annotations

import json
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
# fixture name -> salseg registry name
NAMES = {"u2net": "u2net", "u2netp": "u2netp", "isnetdis": "isnet", "isnet_gt_encoder": "isnet_gt_encoder"}
# BiRefNet fixtures (birefnet_swin_v1_{t,l}*) -> salseg registry name
BIREFNET_NAMES = {"birefnet_swin_v1_t": "birefnet_lite", "birefnet_swin_v1_l": "birefnet"}


def manifest(fixture: str) -> dict:
    return json.loads((FIXTURES / f"{fixture}.json").read_text())


def fixture(fixture: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{fixture}.npz") as data:
        return {k: data[k] for k in data.files}


def swin_relative_position_index(window: int) -> torch.Tensor:
    rows, cols = np.divmod(np.arange(window * window), window)
    dh = rows[:, None] - rows[None, :] + window - 1
    dw = cols[:, None] - cols[None, :] + window - 1
    return torch.from_numpy((dh * (2 * window - 1) + dw).astype(np.int64))


def deterministic_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if key.endswith("relative_position_index"):
        return swin_relative_position_index(int(round(shape[0] ** 0.5)))
    rng = np.random.RandomState(zlib.crc32(key.encode("utf-8")))
    if key.endswith("relative_position_bias_table"):
        values = rng.standard_normal(shape)
    elif key.endswith("weight") and len(shape) == 2:
        values = 0.75 * np.sqrt(2.0 / shape[1]) * rng.standard_normal(shape)
    elif key.endswith("running_mean") or key.endswith("bias"):
        values = 0.1 * rng.standard_normal(shape)
    elif key.endswith("running_var"):
        values = rng.uniform(0.5, 1.5, shape)
    elif key.endswith("weight") and len(shape) == 4:
        values = 0.75 * np.sqrt(2.0 / (shape[1] * shape[2] * shape[3])) * rng.standard_normal(shape)
    elif key.endswith("weight") and len(shape) == 1:
        values = 1.0 + 0.1 * rng.standard_normal(shape)
    else:
        raise ValueError(f"no rule for {key} {shape}")
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def deterministic_state_dict(fixture_name: str) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict((k, deterministic_tensor(k, tuple(s)))
                       for k, s, _ in manifest(fixture_name)["tensors"])


def state_dict_digest(state_dict) -> str:
    """SHA-256 over keys, shapes, dtypes and little-endian bytes, in key order (the digest the
    BiRefNet fixtures record for their weights)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in state_dict.items():
        a = v.detach().cpu().contiguous().numpy()
        h.update(f"{k}|{tuple(a.shape)}|{a.dtype.str}|".encode())
        h.update(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()
