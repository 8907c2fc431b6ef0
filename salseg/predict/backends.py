"""Inference back-ends for prediction: PyTorch and onnxruntime, plus device/precision choice.

Both runners take a normalised float32 batch ``(B, 3, h, w)`` on the CPU and return the
prediction's **probabilities** ``(B, 1, h, w)`` as float32 (on the model's device for PyTorch,
on the CPU for onnxruntime).

* PyTorch: ``sigmoid`` of the prediction logits (fused map for U2-Net, side 1 for IS-Net, see
  :func:`salseg.models.prediction_logits`); ``bf16``/``fp16`` run under ``torch.autocast``
  (fp16 needs CUDA); ``channels_last`` is on by default (about 10% faster on the CPU as well);
  BatchNorms are folded into the convolutions at load (``fold_bn``, :mod:`salseg.models.batchnorm`;
  the caller's module is not modified); on the CPU in fp32 the folded network is traced and
  frozen with ``torch.jit`` once per input shape (``jit``; about 1.5x faster on 2 CPU cores,
  docs/performance.md).
* onnxruntime: output 0 of the graph, which is the probability map in files exported by
  ``salseg-export`` and in the official/rembg U2-Net and IS-Net exports.  Graphs with a fixed
  batch size of 1 are run image by image; float16 graphs get a float16 input.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from salseg.models.batchnorm import fold_batchnorm
from salseg.models.registry import prediction_logits

MAX_TRACES = 4  # traced shapes kept per runner
BACKENDS = ("auto", "torch", "onnx")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; an unavailable CUDA request is an error."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available "
                         "(use --device cpu or auto)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r} (expected auto, cpu or cuda)")
    return dev


def check_precision(precision: str, device: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 inference needs a CUDA device (use bf16 or fp32 on the CPU)")
    return PRECISIONS[precision]


class PredictionLogits(nn.Module):
    """The network followed by its card's output adapter: one tensor, the prediction logits.

    Tracing this (not the bare network) keeps ``torch.jit`` independent of the structure an
    architecture returns (lists, tuples, dicts)."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model, self.name = model, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return prediction_logits(self.name, self.model(x))


class TorchRunner:
    """Run a PyTorch model in eval mode and return the prediction probabilities."""

    def __init__(self, model: nn.Module, name: str, device: torch.device,
                 precision: str = "fp32", channels_last: bool | None = None,
                 fold_bn: bool = True, jit: bool | None = None) -> None:
        self.name = name
        self.device = device
        self.dtype = check_precision(precision, device)
        self.channels_last = True if channels_last is None else channels_last
        self.model = (fold_batchnorm(model) if fold_bn else model.eval()).to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.logits = PredictionLogits(self.model, name).eval()
        self.jit = (device.type == "cpu" and self.dtype == torch.float32) if jit is None else jit
        self._traced: dict[tuple, torch.jit.ScriptModule] = {}

    def _forward(self, x: torch.Tensor):
        """The (traced, frozen) forward; a trace is specialised to (C, H, W), so one per shape."""
        if not self.jit:
            return self.logits(x)
        key = tuple(x.shape[1:])
        traced = self._traced.get(key)
        if traced is None:
            if len(self._traced) >= MAX_TRACES:
                self._traced.pop(next(iter(self._traced)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.freeze(torch.jit.trace(self.logits, x, check_trace=False))
            self._traced[key] = traced
        return traced(x)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, dtype=torch.float32, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype == torch.float32:
            out = self._forward(x)
        else:
            with torch.autocast(device_type=self.device.type, dtype=self.dtype):
                out = self.logits(x)
        return torch.sigmoid(out.float()).contiguous()


class OnnxRunner:
    """Run an ONNX graph with onnxruntime; output 0 is taken as the probability map."""

    def __init__(self, path: str | Path, device: torch.device, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        # no busy-waiting threads: decoding workers and post-processing share the CPU
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError("onnxruntime has no CUDAExecutionProvider here; install "
                                 "onnxruntime-gpu or use --device cpu")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - re-raised with the file name
            raise ValueError(f"{self.path}: onnxruntime cannot load this file ({exc})") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: expected a graph with one input, found {len(inputs)}")
        self.input = inputs[0]
        self.output_name = self.session.get_outputs()[0].name
        shape = self.input.shape
        self.fixed_batch = isinstance(shape[0], int) and shape[0] == 1
        self.fixed_size = tuple(shape[2:]) if all(isinstance(s, int) for s in shape[2:]) else None
        self.np_dtype = np.float16 if self.input.type == "tensor(float16)" else np.float32

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.detach().cpu().numpy().astype(self.np_dtype, copy=False)
        if self.fixed_size is not None and tuple(x.shape[2:]) != self.fixed_size:
            raise ValueError(f"{self.path}: the graph takes {self.fixed_size} inputs, got "
                             f"{tuple(x.shape[2:])} (set --input-size to match)")
        chunks = [x[i:i + 1] for i in range(len(x))] if self.fixed_batch else [x]
        outs = [self.session.run([self.output_name], {self.input.name: c})[0] for c in chunks]
        prob = np.concatenate(outs, axis=0).astype(np.float32, copy=False)
        if prob.ndim == 3:
            prob = prob[:, None]
        return torch.from_numpy(prob[:, :1])


def onnxruntime_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def auto_backend(device: torch.device, precision: str = "fp32") -> str:
    """``--backend auto``: onnxruntime on the CPU in fp32 when it is installed (faster than the
    PyTorch back-end there, docs/performance.md), PyTorch otherwise (CUDA, bf16/fp16)."""
    if device.type == "cpu" and precision == "fp32" and onnxruntime_available():
        return "onnx"
    return "torch"


def exported_onnx_runner(model: nn.Module, name: str, device: torch.device,
                         threads: int | None = None) -> OnnxRunner:
    """Export ``model`` to a temporary ONNX file (BatchNorm folded) and load it in
    onnxruntime; the file is removed once the session holds the graph."""
    import tempfile

    from salseg.export.onnx import export_onnx

    with tempfile.TemporaryDirectory(prefix="salseg-auto-") as tmp:
        path = Path(tmp) / f"{name}.onnx"
        export_onnx(model, path, name, check=False)
        return OnnxRunner(path, device, threads)
