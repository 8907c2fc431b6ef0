"""Losses against the official loss values stored in the parity fixtures."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from parity_helpers import deterministic_state_dict, fixture

from salseg.losses import DeepSupervisionBCE, FeatureSyncLoss
from salseg.losses.parity import isnet_kl_loss, isnet_loss, loss_fns, u2net_loss
from salseg.models import create_model

T = torch.from_numpy
ATOL, TRAIN_LOSS_ATOL = 1e-4, 1e-3


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.double().clamp(1e-12, 1 - 1e-12)
    return torch.log(p) - torch.log1p(-p)


@pytest.mark.parametrize("name", ["u2net", "u2netp"])
def test_u2net_loss_matches_official(name):
    fx = fixture(name)
    outs = [T(fx[k]) for k in ["fused"] + [f"side{i}" for i in range(1, 7)]]
    fused, total = u2net_loss(outs, T(fx["target"]))
    assert abs(float(fused) - float(fx["loss_fused"])) < ATOL
    assert abs(float(total) - float(fx["loss_total"])) < ATOL
    _, terms = DeepSupervisionBCE(from_logits=False)(outs, T(fx["target"]))
    np.testing.assert_allclose([float(t) for t in terms], fx["loss_terms"], atol=ATOL)


def test_logits_and_probabilities_agree():
    fx = fixture("u2netp")
    probs = [T(fx[k]) for k in ["fused"] + [f"side{i}" for i in range(1, 7)]]
    target = T(fx["target"])
    from_probs, _ = DeepSupervisionBCE(from_logits=False)(probs, target)
    from_logits, _ = DeepSupervisionBCE(from_logits=True)([_logit(p) for p in probs], target.double())
    assert abs(float(from_probs) - float(from_logits)) < 1e-4


def test_loss_weights_are_applied():
    maps = [torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)]
    target = torch.ones(1, 1, 4, 4)
    total, terms = DeepSupervisionBCE(weights=[2.0, 0.5])(maps, target)
    assert torch.isclose(total, 2 * terms[0] + 0.5 * terms[1])
    with pytest.raises(ValueError, match="2 output maps but 1 loss weights"):
        DeepSupervisionBCE(weights=[1.0])(maps, target)


def test_isnet_and_gt_encoder_loss_match_official():
    fx = fixture("isnetdis")
    sides = [T(fx[f"side{i}"]) for i in range(1, 7)]
    loss0, loss = isnet_loss(sides, T(fx["target"]))
    assert abs(float(loss0) - float(fx["loss0"])) < ATOL and abs(float(loss) - float(fx["loss"])) < ATOL
    g = fixture("isnet_gt_encoder")
    loss0, loss = isnet_loss([T(g[f"side{i}"]) for i in range(1, 7)], T(g["input"]))
    assert abs(float(loss0) - float(g["loss0"])) < ATOL and abs(float(loss) - float(g["loss"])) < ATOL


@pytest.mark.parametrize("mode", ["MSE", "KL", "MAE", "SmoothL1"])
def test_feature_sync_modes_match_official(mode):
    fx, g = fixture("isnetdis"), fixture("isnet_gt_encoder")
    sides = [T(fx[f"side{i}"]) for i in range(1, 7)]
    dfs = [T(fx[f"feat{i}"]) for i in range(1, 7)]
    fs = [T(g[f"feat{i}"]) for i in range(1, 7)]
    loss0, loss = isnet_kl_loss(sides, T(fx["target"]), dfs, fs, mode=mode)
    assert abs(float(loss0) - float(fx[f"loss_kl_{mode}_loss0"])) < ATOL
    assert abs(float(loss) - float(fx[f"loss_kl_{mode}_loss"])) < ATOL


def test_feature_sync_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown feature-sync mode"):
        FeatureSyncLoss(mode="L3")
    with pytest.raises(ValueError, match="feature shapes differ"):
        FeatureSyncLoss()([torch.zeros(1, 2, 3, 3)], [torch.zeros(1, 2, 4, 4)])


def _load(name, fixture_name):
    model = create_model(name)
    model.load_state_dict(deterministic_state_dict(fixture_name))
    return model


def test_official_phase2_train_step():
    """Both networks in train() mode (the official GT encoder keeps batch-stat BatchNorm)."""
    fx = fixture("isnetdis")
    net, gt_encoder = _load("isnet", "isnetdis").train(), _load("isnet_gt_encoder", "isnet_gt_encoder").train()
    for p in gt_encoder.parameters():
        p.requires_grad_(False)
    x, y = T(fx["train_input"]), T(fx["train_target"])
    sides, dfs = net(x)
    _, fs = gt_encoder(y)
    bce_total, terms = DeepSupervisionBCE()(sides, y)
    sync_total, _ = FeatureSyncLoss()(dfs, fs)
    assert abs(float(terms[0]) - float(fx["train_loss_kl_MSE_loss0"])) < TRAIN_LOSS_ATOL
    assert abs(float(bce_total + sync_total) - float(fx["train_loss_kl_MSE_loss"])) < TRAIN_LOSS_ATOL
    assert abs(float(bce_total) - float(fx["train_loss"])) < TRAIN_LOSS_ATOL  # interm_sup=False


def test_parity_hook_has_all_losses():
    assert set(loss_fns()) == {"u2net", "isnet", "isnet_kl", "isnet_kl_mode"}
