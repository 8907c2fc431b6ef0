"""ONNX export with an onnxruntime-vs-PyTorch parity check, and the ONNX importer.

Graph contract (``export_onnx``):

* one input ``input``: the normalised image batch ``(B, 3, H, W)``, float32, exactly what the
  PyTorch model takes (see :mod:`salseg.models.preprocess`); batch, height and width dynamic;
* outputs in the official order, as **probabilities** (sigmoid applied, like the official
  ``forward``): U2-Net ``fused, side1..side6``; IS-Net ``side1..side6`` (plus the six features
  ``feat1..feat6`` with ``include_features``).  Output 0 is always the prediction;
* opset 17 (onnxruntime >= 1.14 runs it); BatchNorms are folded into the convolutions unless
  ``fold_batchnorm=False``; metadata ``salseg.model`` records the architecture (its card) and
  ``salseg.preprocessing`` the :class:`~salseg.models.card.Preprocessing` as JSON (input size
  of the checkpoint's training, normalisation, grayscale rule, resize, restore), which
  :func:`read_metadata` reads back so that the file predicts like its checkpoint by default.

``rembg=True`` makes the file a drop-in model for rembg's custom sessions: ``u2net_custom`` for
U2-Net / U2-NetP and ``dis_custom`` for IS-Net.  Those sessions feed one float32 input (the
image resized to 320 / 1024 with LANCZOS, divided by its own maximum, then ``(x - mean) / std``
with ImageNet statistics for U2-Net and mean 0.5 / std 1 for IS-Net), read output 0 and min-max
normalise it.  When the model's own normalisation differs from the session's, an affine adapter
is put in front of the network; features are never exported.  Known residual difference:
official IS-Net divides by 255, rembg by the image maximum (identical when the image reaches 255).

The parity check runs the exported file with onnxruntime and the PyTorch model on the same
random input (batch 2, two spatial sizes, one non-square, so the dynamic axes are exercised too)
and raises :class:`ExportCheckError` when any output differs by more than ``tolerance`` (1e-4).

Tracing: the model is traced at ``trace_size`` (>= 64, default 320).  Smaller traces would bake
size-dependent branches of the up-sampling into the graph.

Cards may ask for more (``ModelCard.onnx_opset``, ``onnx_dynamic_size``): BiRefNet needs opset
19 for ``DeformConv`` (``torchvision.ops.deform_conv2d`` is exported as that ONNX operator,
which onnxruntime runs), and its Swin window padding and image tiles are fixed by the input
size, so its graph has a dynamic batch only and is traced at the preprocessing's input size.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from salseg.atomic import atomic_output
from salseg.models.card import IMAGENET_MEAN, IMAGENET_STD, ModelCard, Preprocessing, get_card
from salseg.models.onnx_import import load_onnx, onnx_to_state_dict

__all__ = ["ExportCheckError", "ExportReport", "REMBG_SESSIONS", "export_onnx", "check_onnx",
           "onnx_to_state_dict", "output_names", "read_metadata", "PREPROCESSING_KEY", "CARD_KEY"]

OPSET = 17
MIN_TRACE_SIZE = 64


@dataclass(frozen=True)
class RembgSession:
    """What a rembg custom session feeds a model (all sessions divide by the image maximum)."""

    session: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int


# keyed by rembg session type (a card's ``rembg_session``)
REMBG_SESSIONS = {
    "u2net_custom": RembgSession("u2net_custom", IMAGENET_MEAN, IMAGENET_STD, 320),
    "dis_custom": RembgSession("dis_custom", (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), 1024),
}
CARD_KEY = "salseg.model"  # the card name
PREPROCESSING_KEY = "salseg.preprocessing"  # Preprocessing as JSON (see salseg.models.card)


def _deform_conv_symbolic(g, x, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                          dil_h, dil_w, groups, offset_groups, use_mask):
    """``torchvision::deform_conv2d`` -> ONNX ``DeformConv`` (opset 19)."""
    from torch.onnx.symbolic_helper import _get_const

    ints = [_get_const(v, "i", n) for v, n in ((stride_h, "stride_h"), (stride_w, "stride_w"),
                                               (pad_h, "pad_h"), (pad_w, "pad_w"),
                                               (dil_h, "dil_h"), (dil_w, "dil_w"),
                                               (groups, "groups"),
                                               (offset_groups, "offset_groups"))]
    sh, sw, ph, pw, dh, dw, ng, nog = ints
    inputs = [x, weight, offset, bias]
    if _get_const(use_mask, "b", "use_mask"):
        inputs.append(mask)
    return g.op("DeformConv", *inputs, strides_i=[sh, sw], pads_i=[ph, pw, ph, pw],
                dilations_i=[dh, dw], group_i=ng, offset_group_i=nog)


def _register_custom_symbolics(opset: int) -> None:
    if opset >= 19:
        from torch.onnx import register_custom_op_symbolic

        register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv_symbolic, 19)


class ExportCheckError(RuntimeError):
    """onnxruntime and PyTorch disagree on the exported graph."""


@dataclass
class ExportReport:
    """Where the file went and what the parity check measured."""

    path: Path
    model: str
    outputs: list[str]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    rembg_session: str | None = None
    notes: list[str] = field(default_factory=list)


def output_names(name: str | ModelCard, include_features: bool = False) -> list[str]:
    return get_card(name).onnx_output_names(include_features)


def read_metadata(path: str | Path) -> tuple[str | None, Preprocessing | None]:
    """The card name and :class:`Preprocessing` recorded in an ONNX file by ``export_onnx``.

    ``(None, None)`` for files without them (official/rembg exports); a file from an older
    salseg has the name only.  The preprocessing is the card's with the recorded fields.
    """
    proto = load_onnx(path, load_external_data=False)  # WeightsError naming a bad file
    meta = {p.key: p.value for p in proto.metadata_props}
    name = meta.get(CARD_KEY)
    pre = None
    if name is not None:
        name = get_card(name).name
        if PREPROCESSING_KEY in meta:
            try:
                pre = Preprocessing.from_json(meta[PREPROCESSING_KEY])
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}: bad {PREPROCESSING_KEY} metadata ({exc})") from exc
    return name, pre


class _Exported(nn.Module):
    """The model plus an optional input adapter, returning the official probabilities."""

    def __init__(self, model: nn.Module, card: ModelCard, include_features: bool,
                 scale: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model, self.card, self.include_features = model, card, include_features
        self.scale, self.shift = scale, shift

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.scale is not None:
            x = x * self.scale + self.shift
        return self.card.exported(self.model(x), self.include_features)


def _rembg_adapter(name: str | ModelCard, preprocessing: Preprocessing | None = None
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None, list[str]]:
    card = get_card(name)
    if card.rembg_session not in REMBG_SESSIONS:
        known = [c.name for c in _cards() if c.rembg_session in REMBG_SESSIONS]
        raise ValueError(f"rembg has no custom session for {card.name} (only {', '.join(known)})")
    session, spec = REMBG_SESSIONS[card.rembg_session], preprocessing or card.preprocessing
    name = card.name
    notes: list[str] = []
    if spec.scale != "max":
        notes.append(f"rembg {session.session} divides by the image maximum, the official "
                     f"{name} preprocessing by 255: identical for images that reach 255")
    mean_r, std_r = np.array(session.mean), np.array(session.std)
    mean_m, std_m = np.array(spec.mean), np.array(spec.std)
    if np.allclose(mean_r, mean_m) and np.allclose(std_r, std_m):
        return None, None, notes
    # x_model = ((x_rembg * std_r + mean_r) - mean_m) / std_m
    scale = torch.tensor(std_r / std_m, dtype=torch.float32).view(1, 3, 1, 1)
    shift = torch.tensor((mean_r - mean_m) / std_m, dtype=torch.float32).view(1, 3, 1, 1)
    notes.append("input adapter added for the session's mean/std")
    return scale, shift, notes


def _cards() -> list[ModelCard]:
    from salseg.models.card import cards

    return cards()


def check_onnx(path: str | Path, module: nn.Module, sizes: list[tuple[int, int]],
               batch: int = 2, tolerance: float = 1e-4, seed: int = 0,
               in_ch: int = 3) -> dict[str, float]:
    """Max |onnxruntime - PyTorch| per output over ``sizes``; raise above ``tolerance``."""
    import onnxruntime as ort

    gen = torch.Generator().manual_seed(seed)
    module = module.eval()
    inputs = [torch.randn(batch, in_ch, h, w, generator=gen) for h, w in sizes]
    with torch.no_grad():  # PyTorch first: onnxruntime's spinning threads would slow it down
        references = [module(x) for x in inputs]
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    worst = dict.fromkeys(names, 0.0)
    for (h, w), x, expected in zip(sizes, inputs, references):
        got = session.run(None, {input_name: x.numpy()})
        if len(got) != len(expected):
            raise ExportCheckError(f"{path}: {len(got)} outputs from onnxruntime, "
                                   f"{len(expected)} from PyTorch")
        for name, e, g in zip(names, expected, got):
            if tuple(g.shape) != tuple(e.shape):
                raise ExportCheckError(f"{path}: output {name} has shape {g.shape} in "
                                       f"onnxruntime, {tuple(e.shape)} in PyTorch at {h}x{w}")
            worst[name] = max(worst[name], float(np.abs(g - e.numpy()).max()))
    bad = {k: v for k, v in worst.items() if not v <= tolerance}
    if bad:
        raise ExportCheckError(f"{path}: onnxruntime and PyTorch differ by more than "
                               f"{tolerance:g}: " + ", ".join(f"{k} {v:.3g}" for k, v in bad.items()))
    return worst


def export_onnx(model: nn.Module, path: str | Path, name: str, *, opset: int = OPSET,
                fold_batchnorm: bool = True, include_features: bool = False, rembg: bool = False,
                trace_size: int = 320, check: bool = True,
                check_sizes: list[tuple[int, int]] | None = None, tolerance: float = 1e-4,
                overwrite: bool = False, preprocessing: Preprocessing | None = None
                ) -> ExportReport:
    """Export ``model`` (architecture ``name``) to ``path`` atomically; see the module docstring.

    ``preprocessing`` (default: the card's) is recorded in the metadata, so that the file
    predicts like its checkpoint: pass the checkpoint's training input size through it.
    """
    import onnx

    card = get_card(name)
    name = card.name
    preprocessing = preprocessing or card.preprocessing
    opset = max(opset, card.onnx_opset or opset)
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists (use --overwrite to replace it)")
    if card.onnx_dynamic_size:
        trace_hw = (trace_size, trace_size)
    else:  # the graph is fixed to the input size the file predicts at
        trace_hw = tuple(preprocessing.input_size)
        if any(s % card.size_multiple for s in trace_hw):
            raise ValueError(f"{name} needs an input size whose height and width are multiples "
                             f"of {card.size_multiple}, got {trace_hw}")
        check_sizes = [trace_hw]
    if card.onnx_dynamic_size and trace_size < MIN_TRACE_SIZE:
        raise ValueError(f"trace_size must be >= {MIN_TRACE_SIZE}, got {trace_size}")
    notes: list[str] = []
    scale = shift = None
    if rembg:
        scale, shift, notes = _rembg_adapter(card, preprocessing)
        include_features = False
    model = model.eval().cpu().float()
    wrapped = _Exported(model, card, include_features, scale, shift).eval()
    outputs = output_names(name, include_features)
    in_ch = preprocessing.in_channels
    dummy = torch.randn(1, in_ch, *trace_hw)
    axes = {0: "batch", 2: "height", 3: "width"} if card.onnx_dynamic_size else {0: "batch"}
    dynamic = {"input": dict(axes)}
    dynamic.update({o: dict(axes) for o in outputs})
    _register_custom_symbolics(opset)
    with atomic_output(path, overwrite) as tmp_path:
        tmp = str(tmp_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapped, (dummy,), tmp, dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=outputs,
                              dynamic_axes=dynamic, do_constant_folding=fold_batchnorm,
                              training=torch.onnx.TrainingMode.EVAL)
        proto = onnx.load(tmp)
        meta = {CARD_KEY: name, "salseg.outputs": ",".join(outputs),
                "salseg.batchnorm_folded": str(fold_batchnorm).lower(),
                "salseg.input": "normalised image (see salseg.models.preprocess)",
                PREPROCESSING_KEY: preprocessing.to_json()}
        if rembg:
            meta["salseg.rembg_session"] = REMBG_SESSIONS[card.rembg_session].session
        for k, v in meta.items():
            proto.metadata_props.add(key=k, value=v)
        onnx.save(proto, tmp)
        report = ExportReport(path, name, outputs, rembg_session=meta.get("salseg.rembg_session"),
                              notes=notes)
        if check:
            sizes = check_sizes or [(trace_size, trace_size),
                                    (trace_size * 3 // 4 + 1, trace_size + 8)]
            report.max_abs_diff = check_onnx(tmp, wrapped, sizes, tolerance=tolerance,
                                             in_ch=in_ch)
    return report
