"""Fine-tuning from weights imported from a BatchNorm-folded ONNX graph (issue 12): detected,
trained with frozen BatchNorm statistics, starting at the same loss as the original weights."""
from __future__ import annotations

import pytest
import torch
from fixtures.predict.helpers import random_model, single_thread  # noqa: F401

from salseg.export.onnx import export_onnx, onnx_to_state_dict
from salseg.models import create_model
from salseg.models.batchnorm import (
    FrozenBatchNorm2d,
    fold_batchnorm,
    freeze_batchnorm,
    has_folded_batchnorm,
)
from salseg.models.weights import save_state_dict
from salseg.tasks import TrainingTask
from salseg.weights.load import read_state_dict


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ft")
    model = random_model("u2netp", seed=7)
    original = save_state_dict(model, folder / "original.pth")
    onnx_path = export_onnx(model, folder / "folded.onnx", "u2netp", trace_size=64).path
    imported = create_model("u2netp")
    imported.load_state_dict(onnx_to_state_dict(onnx_path), strict=True)
    folded = save_state_dict(imported, folder / "imported.safetensors")
    return original, folded


def _batch():
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 64, 64, generator=g)
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 16:48, 20:44] = 1
    return {"image": image, "mask": mask}


def _loss(task, batch):
    return task.compute_loss(batch, task(batch["image"]))[0]


def test_folded_batchnorm_is_detected(weights):
    original, folded = weights

    assert has_folded_batchnorm(read_state_dict(folded))
    assert not has_folded_batchnorm(read_state_dict(original))


def test_finetuning_from_imported_weights_matches_the_original(weights):
    original, folded = weights
    batch = _batch()
    imported = TrainingTask(name="u2netp", init_weights=str(folded))  # freeze_bn=auto
    assert imported.freeze_bn
    reference = TrainingTask(name="u2netp", init_weights=str(original), freeze_bn=True)
    assert not TrainingTask(name="u2netp", init_weights=str(original)).freeze_bn  # auto: real stats
    imported.train()
    reference.train()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in imported.model.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in imported.model.modules())
    with torch.no_grad():
        start, ref = _loss(imported, batch), _loss(reference, batch)
    assert start.item() == pytest.approx(ref.item(), rel=1e-4)
    # the observed defect: the same imported weights with BatchNorm in train mode compute a
    # different function (batch statistics instead of the folded ones)
    broken = TrainingTask(name="u2netp")
    broken.model.load_state_dict(read_state_dict(folded))
    broken.train()
    with torch.no_grad():
        frozen_logits, train_logits = imported(batch["image"])[0], broken(batch["image"])[0]
    # measured 0.87 on logits whose frozen-BN range is only +-0.24: far from any rounding
    assert (train_logits - frozen_logits).abs().max().item() > 0.3
    # a few steps do not raise the loss, and the frozen statistics stay as imported
    stats = {k: v.clone() for k, v in imported.model.state_dict().items() if "running" in k}
    opt = torch.optim.Adam(imported.model.parameters(), lr=1e-4)
    for _ in range(3):
        opt.zero_grad()
        loss = _loss(imported, batch)
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert _loss(imported, batch).item() < start.item()
    for k, v in imported.model.state_dict().items():
        if k in stats:
            assert torch.equal(v, stats[k]), k


def test_freeze_bn_false_refuses_folded_weights(weights):
    _, folded = weights
    with pytest.raises(ValueError, match="model.freeze_bn=auto"):
        TrainingTask(name="u2netp", init_weights=str(folded), freeze_bn=False)
    with pytest.raises(ValueError, match="auto, true or false"):
        TrainingTask(name="u2netp", freeze_bn="sometimes")


def test_freeze_batchnorm_helper():
    """Frozen BatchNorms keep the statistics and the function of eval mode in any mode, keep
    the state-dict keys, survive SyncBatchNorm conversion and still fold for inference."""
    net = random_model("u2netp", seed=5)
    keys = list(net.state_dict())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net.eval()(x)[0]
    n = freeze_batchnorm(net)
    assert n > 0 and freeze_batchnorm(net) == n  # idempotent
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert list(net.state_dict()) == keys
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net).train()
    with torch.no_grad():
        assert torch.allclose(net(x)[0], expected, rtol=0, atol=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all(p.requires_grad for p in net.parameters())  # affine parameters still train
    with torch.no_grad():
        folded = fold_batchnorm(net)(x)[0]
    assert torch.allclose(folded, expected, atol=1e-4)
    fresh = create_model("u2netp")
    freeze_batchnorm(fresh)
    fresh.load_state_dict(before)  # a frozen network loads ordinary checkpoints
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())
