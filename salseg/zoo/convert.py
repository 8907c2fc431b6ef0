"""ONNX zoo sources -> checked, cached ``.safetensors`` state dicts.

On first use an ONNX source is read with the project's ONNX importer (weights matched by graph
structure; folded BatchNorms become identity BatchNorms), loaded strictly into the catalogue's
architecture, and checked: onnxruntime and PyTorch run the same seeded probe input and every
compared output must agree within ``TOLERANCE`` (1e-4).  Graphs may output probabilities (the
official and rembg exports) or raw logits; whichever matches is recorded.  The result is cached
in ``$SALSEG_HOME/zoo/converted/<entry>-<sha12>.safetensors`` (keyed by the source file's
checksum) with metadata ``salseg.zoo``, ``salseg.folded_bn`` and ``salseg.max_abs_diff``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from salseg.atomic import follow_umask, mkstemp
from salseg.zoo.cache import ZooError, converted_dir, file_hash, lock_for
from salseg.zoo.catalogue import ZooEntry

TOLERANCE = 1e-4
PROBE_SIZE = 64  # used for dynamic spatial axes; fixed graphs are probed at their own size


class ConversionError(ZooError):
    """An ONNX source could not be converted, or the conversion check failed."""


def converted_path(entry: ZooEntry, onnx_path: Path) -> Path:
    tag = file_hash(onnx_path, "sha256")[:12]
    safe = entry.name.replace("/", "--")
    return converted_dir() / f"{safe}-{tag}.safetensors"


def _probe_shape(session) -> tuple[int, int, int, int]:
    shape = session.get_inputs()[0].shape
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    batch = dims[0] or 1
    return (batch, dims[1] or 3, dims[2] or PROBE_SIZE, dims[3] or PROBE_SIZE)


def check_conversion(model: torch.nn.Module, architecture: str, onnx_path: Path
                     ) -> tuple[str, float]:
    """Run onnxruntime and ``model`` on one probe input; return (output kind, max |diff|).

    Raises :class:`ConversionError` when no interpretation agrees within ``TOLERANCE``.
    """
    import onnxruntime as ort

    from salseg.models.registry import official_flat, prediction_logits

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shape = _probe_shape(session)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    is_fp16 = session.get_inputs()[0].type == "tensor(float16)"
    feed = x.astype(np.float16) if is_fp16 else x
    ort_outs = [np.asarray(o, dtype=np.float32)
                for o in session.run(None, {session.get_inputs()[0].name: feed})]
    model = model.eval()
    with torch.no_grad():
        raw = model(torch.from_numpy(x))
    probs = [t.numpy() for t in official_flat(architecture, raw)]
    logits = prediction_logits(architecture, raw).numpy()
    diffs = {}
    n = min(len(ort_outs), len(probs))
    if all(ort_outs[i].shape == probs[i].shape for i in range(n)):
        diffs["probabilities"] = max(float(np.abs(ort_outs[i] - probs[i]).max()) for i in range(n))
    if ort_outs[0].shape == logits.shape:
        diffs["logits"] = float(np.abs(ort_outs[0] - logits).max())
    if not diffs:
        raise ConversionError(f"{onnx_path}: graph output shape {ort_outs[0].shape} matches no "
                              f"{architecture} output")
    kind = min(diffs, key=diffs.get)
    tol = TOLERANCE * (10 if is_fp16 else 1)
    if diffs[kind] > tol:
        raise ConversionError(f"{onnx_path}: conversion check failed: PyTorch and onnxruntime "
                              f"differ by {diffs[kind]:.3g} (> {tol:g}) on a probe input "
                              f"{shape}")
    return kind, diffs[kind]


def convert_onnx(entry: ZooEntry, onnx_path: str | Path) -> Path:
    """The cached, checked state dict of ``entry``'s ONNX source (converted on first use)."""
    from safetensors.torch import save_file

    from salseg.models.batchnorm import has_folded_batchnorm
    from salseg.models.errors import WeightsError
    from salseg.models.onnx_import import onnx_to_state_dict
    from salseg.models.registry import create_model

    onnx_path = Path(onnx_path)
    target = converted_path(entry, onnx_path)
    if target.is_file():  # written whole (rename) by an earlier run: no lock needed to read it
        return target
    with lock_for(target):
        if target.is_file():
            return target
        try:
            state_dict = onnx_to_state_dict(onnx_path, entry.architecture)
        except WeightsError as exc:
            raise ConversionError(f"{entry.name}: {exc}") from exc
        model = create_model(entry.architecture, **entry.model_kwargs)
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            raise ConversionError(f"{onnx_path}: does not fit {entry.architecture} "
                                  f"(out_ch={entry.out_ch}): {exc}") from exc
        kind, diff = check_conversion(model, entry.architecture, onnx_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = mkstemp(target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
            save_file(tensors, tmp, metadata={
                "salseg.zoo": entry.name, "salseg.model": entry.architecture,
                "salseg.out_ch": str(entry.out_ch),
                "salseg.folded_bn": "1" if has_folded_batchnorm(tensors) else "0",
                "salseg.onnx_output": kind, "salseg.max_abs_diff": f"{diff:.3g}",
                "salseg.source": onnx_path.name})
            follow_umask(tmp)  # save_file writes a new 0600 file
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return target
