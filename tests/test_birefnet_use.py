"""BiRefNet through the paths users run: salseg-predict (subprocess), the Predictor with the
official inference pipeline, and salseg-export to ONNX (DeformConv, dynamic batch) checked
against PyTorch."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.predict.helpers import object_image
from PIL import Image

from salseg.models import create_model, get_card
from salseg.predict.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow
def test_predictor_uses_the_official_pipeline():
    """No min-max: the mask is the sigmoid map resized with align_corners=True, truncated."""
    torch.manual_seed(0)
    model = create_model("birefnet_lite").eval()
    p = Predictor(model, model="birefnet_lite", input_size=(64, 32), device="cpu",
                  backend="torch")
    assert p.normalization == "sigmoid" and p.preprocessing.resize == "cv2_linear"
    image = object_image(41, 59, seed=2)
    mask = p.predict(image)
    assert mask.shape == (41, 59) and mask.dtype == np.uint8
    import cv2

    x = cv2.resize(image, (32, 64), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    x = (x - np.float32([0.485, 0.456, 0.406])) / np.float32([0.229, 0.224, 0.225])
    with torch.no_grad():
        prob = torch.sigmoid(model(torch.from_numpy(x).permute(2, 0, 1)[None].float())[0])
    ref = torch.nn.functional.interpolate(prob, size=(41, 59), mode="bilinear",
                                          align_corners=True)[0, 0]
    ref = np.floor(ref.clamp(0, 1).numpy() * np.float32(255)).astype(np.uint8)
    assert np.abs(mask.astype(int) - ref.astype(int)).max() <= 1


def test_predictor_refuses_sizes_that_are_not_multiples_of_32():
    model = create_model("birefnet_lite")
    with pytest.raises(ValueError, match="multiples of 32"):
        Predictor(model, model="birefnet_lite", input_size=(50, 64), device="cpu",
                  backend="torch")


@pytest.mark.slow
def test_salseg_predict_random_weights_writes_a_mask(tmp_path):
    image = tmp_path / "img.jpg"
    Image.fromarray(object_image(50, 70, seed=1)).save(image)
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "salseg.cli.predict", str(image), "-o", str(out),
                          "--model", "birefnet_lite", "--random-weights", "--input-size", "64",
                          "--backend", "torch"],
                         capture_output=True, text=True, env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr
    mask = np.asarray(Image.open(out / "img.png"))
    assert mask.shape == (50, 70) and mask.dtype == np.uint8


@pytest.mark.slow
def test_onnx_export_deformconv_dynamic_batch(tmp_path):
    import onnxruntime as ort

    from salseg.export.onnx import export_onnx, read_metadata

    torch.manual_seed(1)
    card = get_card("birefnet_lite")
    model = card.build().eval()
    pre = replace(card.preprocessing, input_size=(64, 96))
    report = export_onnx(model, tmp_path / "b.onnx", "birefnet_lite", preprocessing=pre)
    assert max(report.max_abs_diff.values()) <= 1e-4  # batch 2 against PyTorch
    assert read_metadata(report.path) == ("birefnet_lite", pre)
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in __import__("onnx").load(str(report.path)).graph.node}
    assert "DeformConv" in ops
    x = torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = torch.sigmoid(model(x)[0]).numpy()
    assert got.shape == (3, 1, 64, 96) and np.abs(got - ref).max() <= 1e-4


@pytest.mark.slow
def test_salseg_export_cli(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "lite.pth"
    torch.save(create_model("birefnet_lite").state_dict(), weights)
    out = tmp_path / "lite.onnx"
    res = subprocess.run([sys.executable, "-m", "salseg.cli.export", "--model", "birefnet_lite",
                          "--weights", str(weights), "-o", str(out), "--input-size", "64"],
                         capture_output=True, text=True, env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr
    assert out.is_file() and "max |diff|" in res.stdout
