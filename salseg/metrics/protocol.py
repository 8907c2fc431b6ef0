"""Evaluation protocol shared by every metric: input checks, GT binarisation, 8-bit quantisation,
min-max normalisation and the bilinear resize of a prediction to its ground truth's size.

Conventions (docs/metrics.md):

* predictions are probability maps in [0, 1] (float) or 8-bit maps 0..255 (``uint8``). Float maps are
  always quantised to 8 bits like a saved PNG (``round(255 * p)``); a ``uint8`` map read from a
  PNG is used as it is, so that a pipeline fed from PNG files equals the reference tools' pipeline
  bit for bit.
* ground truths are ``bool``, ``uint8`` 0..255 or float in [0, 1] (converted with ``round(255 g)``);
  the foreground is ``g > 128`` on the 0..255 scale (pysodmetrics, DIS, the U2-Net tool).
* the prediction must already have the GT's size; :func:`resize_to_gt` does the protocol's bilinear
  resize (half-pixel centres, as ``cv2.resize(..., INTER_LINEAR)`` and ``F.interpolate``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

GT_THRESHOLD_U8 = 128


def as_batch(x: torch.Tensor, what: str) -> torch.Tensor:
    """Return ``x`` as (B, H, W): accepts (H, W), (B, H, W) and (B, 1, H, W)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 2:
        return x.unsqueeze(0)
    if x.ndim == 3:
        return x
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    raise ValueError(f"{what}: expected shape (H, W), (B, H, W) or (B, 1, H, W), got {tuple(x.shape)}")


def pred_to_u8(pred: torch.Tensor) -> torch.Tensor:
    """8-bit quantisation of a prediction (as saving it as a PNG would): uint8 maps pass unchanged,
    float maps in [0, 1] become ``round(255 * p)``."""
    if pred.dtype == torch.uint8:
        return pred
    if pred.dtype == torch.bool:
        return pred.to(torch.uint8) * 255
    if not pred.is_floating_point():
        raise TypeError(f"prediction: unsupported dtype {pred.dtype} (use float in [0, 1] or uint8)")
    _check_unit_range(pred, "prediction")
    if pred.dtype in (torch.float16, torch.bfloat16):  # 255 p needs more than 8 mantissa bits
        pred = pred.float()
    return torch.round(pred.clamp(0, 1) * 255).to(torch.uint8)


def gt_to_u8(gt: torch.Tensor) -> torch.Tensor:
    """Ground truth on the 0..255 scale: bool -> 0/255, uint8 unchanged, float in [0, 1] -> round(255 g)."""
    if gt.dtype == torch.uint8:
        return gt
    if gt.dtype == torch.bool:
        return gt.to(torch.uint8) * 255
    if not gt.is_floating_point():
        raise TypeError(f"ground truth: unsupported dtype {gt.dtype} (use bool, uint8 or float in [0, 1])")
    _check_unit_range(gt, "ground truth")
    if gt.dtype in (torch.float16, torch.bfloat16):
        gt = gt.float()
    return torch.round(gt.clamp(0, 1) * 255).to(torch.uint8)


def gt_to_bool(gt: torch.Tensor) -> torch.Tensor:
    """Binary ground truth: ``g > 128`` on the 0..255 scale."""
    if gt.dtype == torch.bool:
        return gt
    return gt_to_u8(gt) > GT_THRESHOLD_U8


def minmax_normalize(p: torch.Tensor) -> torch.Tensor:
    """pysodmetrics' ``mapminmax``: ``(p - min) / (max - min)`` per image when max != min; a constant
    map stays as it is (so no NaN). ``p`` is (H, W) float64."""
    lo, hi = p.min(), p.max()
    if bool(hi != lo):
        return (p - lo) / (hi - lo)
    return p


def check_same_size(pred: torch.Tensor, gt: torch.Tensor) -> None:
    """Raise a clear error when a prediction and its GT differ in size (see :func:`resize_to_gt`)."""
    if pred.shape[-2:] != gt.shape[-2:]:
        raise ValueError(
            f"prediction size {tuple(pred.shape[-2:])} differs from ground-truth size "
            f"{tuple(gt.shape[-2:])}; resize the prediction first (salseg.metrics.resize_to_gt)"
        )


def resize_to_gt(pred: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a prediction to the GT size (H, W) (the evaluation protocol).

    Half-pixel centres and no antialiasing, like ``cv2.resize(pred, (W, H), cv2.INTER_LINEAR)``,
    ``F.interpolate(..., 'bilinear', align_corners=False)`` and U2-Net's/IS-Net's own resize.

    * ``uint8`` maps reproduce OpenCV's 8-bit ``INTER_LINEAR`` bit for bit (11-bit fixed-point
      weights, its rounding, rows not clamped at the border; see :func:`_resize_u8_like_opencv`),
      which is how the reference values for mismatched pairs were produced (PySODEvalToolkit's
      convention).
    * float maps use ``F.interpolate(mode='bilinear', align_corners=False)``.

    Accepts (H, W), (B, H, W) or (B, 1, H, W) and returns the same layout; returns the input
    itself when the size already matches.
    """
    h, w = int(size_hw[0]), int(size_hw[1])
    if tuple(pred.shape[-2:]) == (h, w):
        return pred
    if pred.ndim not in (2, 3, 4):
        raise ValueError(f"resize_to_gt: unsupported shape {tuple(pred.shape)}")
    if pred.dtype == torch.uint8:
        return _resize_u8_like_opencv(pred, h, w)
    if pred.dtype == torch.bool:
        return _resize_u8_like_opencv(pred.to(torch.uint8) * 255, h, w) > 127
    orig_ndim = pred.ndim
    x = pred
    while x.ndim < 4:
        x = x.unsqueeze(0)
    y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    while y.ndim > orig_ndim:
        y = y.squeeze(0)
    return y


_COEF_BITS = 11  # OpenCV INTER_RESIZE_COEF_BITS


def _linear_coefficients(src: int, dst: int, clamp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices and 11-bit fixed-point weights of OpenCV's linear resize along one axis.

    OpenCV computes ``f = float32((d + 0.5) * scale - 0.5)``, ``s = floor(f)``, weights
    ``round(float32(1 - frac) * 2048)`` and ``round(float32(frac) * 2048)``; along x it clamps
    ``s`` to the image (weight 1 on the edge pixel), along y it does not (the rows themselves
    are clipped instead).
    """
    scale = 1.0 / (dst / src)
    d = np.arange(dst, dtype=np.float64)
    f = ((d + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f)
    frac = (f - s.astype(np.float32)).astype(np.float32)
    s = s.astype(np.int64)
    if clamp:
        low = s < 0
        frac[low], s[low] = 0, 0
        high = s >= src - 1
        frac[high], s[high] = 0, src - 1
    one = np.float32(1)
    scale_fp = np.float32(1 << _COEF_BITS)
    w0 = np.rint((one - frac) * scale_fp).astype(np.int64)
    w1 = np.rint(frac * scale_fp).astype(np.int64)
    return torch.from_numpy(s), torch.from_numpy(np.stack([w0, w1], axis=1))


def _resize_u8_like_opencv(pred: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """OpenCV 8-bit bilinear resize: horizontal pass in integers, vertical pass as OpenCV's SIMD
    code does it (``((r >> 4) * b) >> 16`` per row, then ``(sum + 2) >> 2``)."""
    src_h, src_w = pred.shape[-2:]
    xs, xw = _linear_coefficients(src_w, w, clamp=True)
    ys, yw = _linear_coefficients(src_h, h, clamp=False)
    dev = pred.device
    xs, xw, ys, yw = xs.to(dev), xw.to(dev), ys.to(dev), yw.to(dev)
    img = pred.to(torch.int64)
    xs1 = (xs + 1).clamp(max=src_w - 1)
    rows = img[..., xs] * xw[:, 0] + img[..., xs1] * xw[:, 1]
    r0 = rows[..., ys.clamp(0, src_h - 1), :] >> 4
    r1 = rows[..., (ys + 1).clamp(0, src_h - 1), :] >> 4
    v = ((r0 * yw[:, 0:1]) >> 16) + ((r1 * yw[:, 1:2]) >> 16)
    return ((v + 2) >> 2).clamp(0, 255).to(torch.uint8)


def _check_unit_range(x: torch.Tensor, what: str) -> None:
    if x.numel() == 0:
        raise ValueError(f"{what}: empty map")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-6 or hi > 1 + 1e-6 or x.isnan().any():
        raise ValueError(
            f"{what}: float maps must lie in [0, 1] (got min {lo:.4g}, max {hi:.4g}); pass uint8 "
            "for 0..255 maps"
        )


class MapPair:
    """One (prediction, ground truth) pair of equal size with the representations the metrics
    need, each computed once (lazily).

    ``pred`` is a (H, W) float map in [0, 1] (quantised to 8 bits, ``round(255 p)``, as the
    reference tools only ever see saved PNGs) or a uint8 map 0..255; ``gt`` is bool, uint8 0..255
    or float in [0, 1]. Because the prediction takes at most 256 values, every per-pixel function
    of it (normalisation, thresholds) is evaluated once per value (a 256-entry table, computed
    with exactly the reference's float operations) and combined with value histograms; the
    histograms are counted on the tensors' device, the tables in numpy float64.
    """

    def __init__(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        if pred.ndim != 2 or gt.ndim != 2:
            raise ValueError(
                f"MapPair expects (H, W) maps, got {tuple(pred.shape)} and {tuple(gt.shape)}"
            )
        check_same_size(pred, gt)
        self._pred = pred
        self._gt = gt
        self._cache: dict[str, Any] = {}

    def _get(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self._pred.shape[0]), int(self._pred.shape[1]))

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def p8(self) -> torch.Tensor:
        """8-bit prediction (uint8 tensor)."""
        return self._get("p8", lambda: pred_to_u8(self._pred))

    @property
    def p255(self) -> torch.Tensor:
        """Prediction on the 0..255 scale as float64 (integer values)."""
        return self._get("p255", lambda: self.p8.to(torch.float64))

    @property
    def p(self) -> torch.Tensor:
        """Prediction in [0, 1], float64: ``p8 / 255``."""
        return self._get("p", lambda: self.p255 / 255)

    @property
    def g8(self) -> torch.Tensor:
        """Ground truth on the 0..255 scale (uint8)."""
        return self._get("g8", lambda: gt_to_u8(self._gt))

    @property
    def gt(self) -> torch.Tensor:
        """Binary ground truth, ``g > 128``."""
        return self._get("gt", lambda: self.g8 > GT_THRESHOLD_U8)

    @property
    def gt_np(self) -> np.ndarray:
        """Binary ground truth as a numpy array (CPU)."""
        return self._get("gt_np", lambda: self.gt.cpu().numpy())

    @property
    def p8_np(self) -> np.ndarray:
        """8-bit prediction as a numpy array (CPU)."""
        return self._get("p8_np", lambda: self.p8.cpu().numpy())

    @property
    def on_cpu(self) -> bool:
        return self._pred.device.type == "cpu"

    @property
    def n_fg(self) -> int:
        def compute() -> int:
            if self.on_cpu:
                return int(np.count_nonzero(self.gt_np))
            return int(self.gt.sum())

        return self._get("n_fg", compute)

    # ---- value tables and histograms -----------------------------------------------------
    @property
    def centroid(self) -> tuple[int, int]:
        """GT centroid as pysodmetrics' S-measure uses it: ``round(mean(argwhere(gt))) + 1``
        (round half to even); the image centre for an empty GT."""

        def compute() -> tuple[int, int]:
            h, w = self.shape
            n = self.n_fg
            if n == 0:
                return int(np.round(h / 2)) + 1, int(np.round(w / 2)) + 1
            if self.on_cpu:
                gt_np = self.gt_np
                rows, cols = np.count_nonzero(gt_np, axis=1), np.count_nonzero(gt_np, axis=0)
            else:
                rows = self.gt.sum(1, dtype=torch.int64).cpu().numpy()
                cols = self.gt.sum(0, dtype=torch.int64).cpu().numpy()
            cy = float(np.dot(np.arange(h, dtype=np.int64), rows)) / n
            cx = float(np.dot(np.arange(w, dtype=np.int64), cols)) / n
            return int(np.round(cy)) + 1, int(np.round(cx)) + 1

        return self._get("centroid", compute)

    @property
    def block_hists(self) -> np.ndarray:
        """(4, 2, 256) int64 value histograms of the prediction, split by GT label (index 0 =
        background, 1 = foreground), in the four S-measure blocks around the GT centroid
        (top-left, top-right, bottom-left, bottom-right)."""

        def compute() -> np.ndarray:
            cy, cx = self.centroid
            if self.on_cpu:
                idx = self.p8_np.astype(np.uint16)
                idx |= self.gt_np.view(np.uint8).astype(np.uint16) << 8
            else:
                idx = self.p8.to(torch.int16) + (self.gt.to(torch.int16) << 8)
            out = np.zeros((4, 2, 256), dtype=np.int64)
            blocks = (idx[:cy, :cx], idx[:cy, cx:], idx[cy:, :cx], idx[cy:, cx:])
            for k, b in enumerate(blocks):
                if b.shape[0] and b.shape[1]:
                    out[k] = _bincount(b, 512).reshape(2, 256)
            return out

        return self._get("block_hists", compute)

    @property
    def hist(self) -> np.ndarray:
        """(2, 256) int64: prediction value counts on GT background (row 0) and foreground."""
        return self._get("hist", lambda: self.block_hists.sum(0))

    @property
    def value_range(self) -> tuple[int, int]:
        """(min, max) of the 8-bit prediction."""

        def compute() -> tuple[int, int]:
            present = np.flatnonzero(self.hist.sum(0))
            return int(present[0]), int(present[-1])

        return self._get("value_range", compute)

    @property
    def lut_p_norm(self) -> np.ndarray:
        """pysodmetrics' normalised prediction for each 8-bit value v: ``p = v / 255``, then
        ``(p - min p) / (max p - min p)`` when max != min (float64, the reference's operations)."""

        def compute() -> np.ndarray:
            p = np.arange(256, dtype=np.float64) / 255
            lo, hi = self.value_range
            if hi != lo:
                return (p - p[lo]) / (p[hi] - p[lo])
            return p

        return self._get("lut_p_norm", compute)

    @property
    def p_norm(self) -> torch.Tensor:
        """Normalised prediction per pixel (float64 tensor, on the pair's device)."""

        def compute() -> torch.Tensor:
            lut = torch.from_numpy(self.lut_p_norm).to(self.p8.device)
            return lut[self.p8.to(torch.int64)]

        return self._get("p_norm", compute)


def _bincount(idx: torch.Tensor | np.ndarray, minlength: int) -> np.ndarray:
    """Histogram of non-negative integer values (numpy on CPU, torch on accelerators)."""
    if isinstance(idx, np.ndarray):
        return np.bincount(idx.reshape(-1), minlength=minlength)
    if idx.device.type == "cpu":
        return np.bincount(idx.reshape(-1).numpy(), minlength=minlength)
    return torch.bincount(idx.reshape(-1).to(torch.int64), minlength=minlength).cpu().numpy()


def iter_pairs(preds: torch.Tensor, target: torch.Tensor) -> Iterator[MapPair]:
    """Yield :class:`MapPair` objects for a batch (shapes as in :func:`as_batch`)."""
    p = as_batch(preds, "prediction")
    g = as_batch(target, "ground truth")
    if p.shape[0] != g.shape[0]:
        raise ValueError(f"batch sizes differ: {p.shape[0]} predictions, {g.shape[0]} ground truths")
    check_same_size(p, g)
    for i in range(p.shape[0]):
        yield MapPair(p[i], g[i])
