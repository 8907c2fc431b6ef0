"""BatchNorm folding for inference (salseg.models.batchnorm) keeps outputs within parity tolerance."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from salseg.models import create_model
from salseg.models.batchnorm import fold_batchnorm, fold_conv_bn
from salseg.models.registry import official_flat
from salseg.predict.backends import TorchRunner


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(1 + 0.1 * torch.randn(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))
    return model.eval()


def test_fold_conv_bn_equals_conv_then_bn():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 5, 3, padding=2, dilation=2), nn.BatchNorm2d(5)
    _randomise_bn(bn)
    x = torch.randn(2, 3, 9, 11)
    torch.testing.assert_close(fold_conv_bn(conv, bn)(x), bn(conv(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["u2netp", "isnet_gt_encoder"])
def test_fold_keeps_outputs_within_parity_tolerance(name):
    torch.manual_seed(0)
    net = _randomise_bn(create_model(name))
    x = torch.rand(1, 1 if name == "isnet_gt_encoder" else 3, 72, 88)
    folded = fold_batchnorm(net)
    assert folded.folded_batchnorms == sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        ref, got = official_flat(name, net(x)), official_flat(name, folded(x))
    for a, b in zip(ref, got):
        assert (a - b).abs().max().item() < 1e-4  # parity tolerance for eval outputs
    # the original keeps its state dict (checkpoints unaffected)
    assert any(k.endswith("bn_s1.running_var") for k in net.state_dict())


def test_torch_runner_folds_by_default_and_matches_unfolded():
    torch.manual_seed(0)
    net = _randomise_bn(create_model("u2netp"))
    x = torch.randn(2, 3, 64, 64)
    plain = TorchRunner(net, "u2netp", torch.device("cpu"), fold_bn=False)
    fast = TorchRunner(net, "u2netp", torch.device("cpu"))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.model.modules())
    assert (plain(x) - fast(x)).abs().max().item() < 1e-4


def test_torch_runner_jit_trace_matches_eager_and_is_cached_per_shape():
    torch.manual_seed(0)
    net = _randomise_bn(create_model("u2netp"))
    eager = TorchRunner(net, "u2netp", torch.device("cpu"), jit=False)
    traced = TorchRunner(net, "u2netp", torch.device("cpu"))
    assert traced.jit and not eager.jit
    for shape in [(1, 3, 64, 64), (2, 3, 64, 64), (1, 3, 48, 72)]:
        x = torch.randn(*shape)
        assert (eager(x) - traced(x)).abs().max().item() < 1e-4
    assert len(traced._traced) == 2  # (3, 64, 64) for batches 1 and 2, and (3, 48, 72)


def test_auto_backend_runs_onnxruntime_on_the_cpu_with_the_same_output():
    pytest.importorskip("onnxruntime")
    from salseg.predict.backends import OnnxRunner, auto_backend
    from salseg.predict.predictor import Predictor

    assert auto_backend(torch.device("cpu"), "bf16") == "torch"
    torch.manual_seed(0)
    net = _randomise_bn(create_model("u2netp"))
    auto = Predictor(net, model="u2netp", backend="auto", device="cpu", input_size=64)
    plain = Predictor(net, model="u2netp", backend="torch", device="cpu", input_size=64)
    assert auto.backend == "onnx" and isinstance(auto.runner, OnnxRunner)
    x = torch.randn(1, 3, 64, 64)
    assert (auto.infer(x) - plain.infer(x)).abs().max().item() < 1e-4
