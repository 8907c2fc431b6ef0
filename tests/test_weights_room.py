"""The weights room: one resolve() to a typed result; a project .ckpt is read once per
Predictor build."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from salseg.models import create_model
from salseg.models.errors import WeightsError
from salseg.predict.predictor import Predictor
from salseg.weights import resolve


def _ckpt(path, input_size=(64, 48)):
    torch.manual_seed(0)
    net = create_model("u2netp")
    for m in net.modules():  # trained statistics (fresh ones look folded: identity)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(2.0)
    sd = {f"model.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": sd, "pytorch-lightning_version": "2.5.0",
                "hyper_parameters": {"name": "u2netp", "input_size": list(input_size)}}, path)
    return net


def test_a_project_checkpoint_is_read_once_per_predictor(tmp_path, monkeypatch):
    """Building a Predictor from a .ckpt used to torch.load the file four times (meta twice,
    weights, preprocessing); now once, and everything comes from that read."""
    path = tmp_path / "run.ckpt"
    net = _ckpt(path)
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    p = Predictor(str(path), device="cpu")
    assert len(calls) == 1
    assert p.name == "u2netp" and p.preprocessor.size == (64, 48)
    assert torch.equal(p.model.state_dict()["side1.weight"], net.state_dict()["side1.weight"])


@pytest.mark.parametrize("fmt", ["ckpt", "pth", "safetensors"])
def test_resolve_gives_a_typed_result(tmp_path, fmt):
    net = _ckpt(tmp_path / "w.ckpt")
    path = tmp_path / f"w.{fmt}"
    if fmt == "pth":
        torch.save(net.state_dict(), path)
    elif fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    w = resolve(path)
    assert w.card.name == "u2netp" and w.format == fmt and w.path == path
    assert set(w.state_dict) == set(net.state_dict())
    assert not w.folded_bn
    assert resolve(path, model="u2netp").card.name == "u2netp"
    assert w.preprocessing.input_size == ((64, 48) if fmt == "ckpt" else (320, 320))
    assert w.metadata.get("input_size") == ([64, 48] if fmt == "ckpt" else None)
    assert torch.equal(w.build().state_dict()["side1.weight"], net.state_dict()["side1.weight"])


def test_resolve_errors_name_the_file(tmp_path):
    with pytest.raises(WeightsError, match="missing.pth: checkpoint file not found"):
        resolve(tmp_path / "missing.pth")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(WeightsError, match="empty.ckpt: checkpoint file is empty"):
        resolve(tmp_path / "empty.ckpt")
