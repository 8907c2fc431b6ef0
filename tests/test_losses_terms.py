"""Losses as configured terms: today's recipes unchanged, BiRefNet's loss against the official
values (tests/fixtures/losses: the stored official train() outputs of BiRefNet swin_v1_t and
the losses the official code computed from them), output naming, fine-tune schedules."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from parity_helpers import fixture

from salseg.config import CONFIG_DIR
from salseg.losses import DeepSupervisionBCE, FeatureSyncLoss
from salseg.losses.criteria import iou_loss, ssim_loss
from salseg.losses.parity import birefnet_loss
from salseg.losses.terms import LossTerm, LossTerms, parse_loss
from salseg.models.birefnet import (
    DIS5K_LAMBDAS,
    GENERAL_LAMBDAS,
    PIX_CRITERIA,
    birefnet_loss_config,
)
from salseg.models.card import ModelOutputs

FIXTURE = Path(__file__).parent / "fixtures" / "losses" / "birefnet_swin_v1_t_loss.npz"
LOSS_ATOL = 1e-3  # the reference's tolerance for losses from stored tensors (float32 noise 8e-5)
T = torch.from_numpy


@pytest.fixture(scope="module")
def official():
    data = np.load(FIXTURE)
    return {k: data[k] for k in data.files}


def _tensors(fx):
    preds = [T(fx[f"train_pred{i}"]) for i in range(4)]
    gdt_preds = [T(fx[f"train_gdt_pred{i}"]) for i in range(3)]
    gdt_labels = [T(fx[f"train_gdt_label{i}"]) for i in range(3)]
    return preds, gdt_preds, gdt_labels, T(fx["target"])


def _variants(fx):
    return json.loads(str(fx["lambdas"]))


@pytest.mark.parametrize("variant", ["DIS5K_main", "DIS5K_finetune1", "General_main",
                                     "General_finetune1"])
def test_birefnet_loss_matches_official(official, variant):
    lambdas = _variants(official)[variant]
    preds, gdt_preds, gdt_labels, gt = _tensors(official)
    out = birefnet_loss(preds, gdt_preds, gdt_labels, gt, lambdas)
    assert abs(float(out["loss"]) - float(official[f"loss.{variant}.total"])) < LOSS_ATOL
    assert abs(float(out["loss_pix"]) - float(official[f"loss.{variant}.pix"])) < LOSS_ATOL
    assert abs(float(out["loss_gdt"]) - float(official[f"loss.{variant}.gdt"])) < LOSS_ATOL
    for key in ("bce", "iou", "ssim", "mae"):
        if key in out:
            assert abs(float(out[key]) - float(official[f"loss.{variant}.dict.{key}"])) < LOSS_ATOL
    # every term of every level, through the configured terms themselves
    terms = LossTerms.from_config(birefnet_loss_config(lambdas))
    outputs = ModelOutputs(sides=preds, features=[], prediction=preds[-1],
                           aux={"gdt_preds": gdt_preds, "gdt_labels": gdt_labels})
    _, logged = terms(outputs, {"mask": gt})
    criteria = list(PIX_CRITERIA if variant.startswith("General") else PIX_CRITERIA[:3])
    pix_terms = official[f"loss.{variant}.pix_terms"]  # levels x criteria, weighted
    for j, c in enumerate(criteria):
        for level in range(4):
            got = float(logged[f"{c}_sides{level + 1}"]) * lambdas[c] if lambdas[c] else 0.0
            assert abs(got - pix_terms[level, j]) < LOSS_ATOL, (c, level)
    for k in range(3):
        got = float(logged[f"gdt_gdt_preds{k + 1}"])
        assert abs(got - official[f"loss.{variant}.gdt_terms"][k]) < LOSS_ATOL


def _direction(shape, seed):
    """A fixed float32 N(0, 1) tensor from numpy's RandomState(seed), as the reference draws."""
    return torch.from_numpy(np.random.RandomState(seed).standard_normal(tuple(shape))
                            .astype(np.float32))


def test_birefnet_loss_backward_matches_official(official):
    """<d loss / d X, r_X> at the stored outputs: the loss differentiates every input the
    official way (e.g. it does not detach the gradient labels)."""
    lambdas = _variants(official)["DIS5K_main"]
    groups = dict(zip(("preds", "gdt_preds", "gdt_labels"), _tensors(official)[:3]))
    leaves = {g: [t.clone().requires_grad_(True) for t in ts] for g, ts in groups.items()}
    loss = birefnet_loss(leaves["preds"], leaves["gdt_preds"], leaves["gdt_labels"],
                         T(official["target"]), lambdas)["loss"]
    flat = [t for g in ("preds", "gdt_preds", "gdt_labels") for t in leaves[g]]
    grads = dict(zip(map(id, flat), torch.autograd.grad(loss, flat)))
    for group, seed in (("preds", 2000), ("gdt_preds", 3000), ("gdt_labels", 4000)):
        value = sum(float((grads[id(t)].double() * _direction(t.shape, seed + k).double()).sum())
                    for k, t in enumerate(leaves[group]))
        ref = float(official[f"loss.DIS5K_main.dir_grad.{group}"])
        assert abs(value - ref) / abs(ref) < 2e-2, (group, value, ref)


def test_iou_is_summed_over_the_batch_and_ssim_is_official():
    p = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    g = (torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    per = [float(iou_loss(p[i:i + 1], g[i:i + 1])) for i in range(3)]
    assert abs(float(iou_loss(p, g)) - sum(per)) < 1e-5
    assert float(ssim_loss(g, g)) == pytest.approx(0.0, abs=1e-6)  # SSIM 1 on identical maps
    assert 0.0 < float(ssim_loss(p, g)) < 1.0


@pytest.mark.parametrize("name,lambdas,last", [("birefnet_dis5k", DIS5K_LAMBDAS, 40),
                                               ("birefnet_general", GENERAL_LAMBDAS, 20)])
def test_birefnet_loss_configs_are_the_function(name, lambdas, last):
    """configs/loss/birefnet_*.yaml are exactly the terms of birefnet_loss_config."""
    given = yaml.safe_load((CONFIG_DIR / "loss" / f"{name}.yaml").read_text())
    assert given == birefnet_loss_config(lambdas, finetune_last_epochs=last)


def test_finetune_reweighting_compounds_per_epoch(official):
    """BiRefNet's fine-tune phase: the weights are rescaled at every fine-tune epoch (iou
    0.5 * 0.5**k, bce 0); the first fine-tune epoch gives the official *_finetune1 loss."""
    terms = LossTerms.from_config(birefnet_loss_config(DIS5K_LAMBDAS, finetune_last_epochs=40))
    iou = next(t for t in terms.terms if t.name == "iou")
    assert [iou.multiplier(e, 100) for e in (0, 59, 60, 61, 62)] == [1, 1, 0.5, 0.25, 0.125]
    preds, gdt_preds, gdt_labels, gt = _tensors(official)
    outputs = ModelOutputs(sides=preds, features=[], prediction=preds[-1],
                           aux={"gdt_preds": gdt_preds, "gdt_labels": gdt_labels})
    main, _ = terms(outputs, {"mask": gt}, epoch=59, max_epochs=100)
    first, _ = terms(outputs, {"mask": gt}, epoch=60, max_epochs=100)
    assert abs(float(main) - float(official["loss.DIS5K_main.total"])) < LOSS_ATOL
    assert abs(float(first) - float(official["loss.DIS5K_finetune1.total"])) < LOSS_ATOL


def test_todays_recipes_are_bitwise_the_old_losses():
    """The cards' default terms give exactly DeepSupervisionBCE + FeatureSyncLoss."""
    fx, g = fixture("isnetdis"), fixture("isnet_gt_encoder")
    target = T(fx["target"])
    sides = [torch.logit(T(fx[f"side{i}"]).double().clamp(1e-6, 1 - 1e-6)) for i in range(1, 7)]
    feats, gfeats = [T(fx[f"feat{i}"]) for i in range(1, 7)], [T(g[f"feat{i}"]) for i in range(1, 7)]
    for form in ("logits", "official"):
        old_bce, old_terms = DeepSupervisionBCE(form=form)(sides, target)
        old_sync, _ = FeatureSyncLoss()(feats, gfeats)
        from salseg.models.card import get_card
        card = get_card("isnet")
        terms = LossTerms(parse_loss(card.loss, form=form))
        raw = (sides, feats)
        total, logged = terms(card.read(raw), {"mask": target, "gt_encoder": gfeats})
        assert torch.equal(total, old_bce + old_sync)
        assert [logged[f"bce_side{i}"] for i in range(1, 7)] == old_terms
        assert torch.equal(logged["loss_bce"], old_bce) and torch.equal(logged["loss_sync"], old_sync)


def test_an_unnamed_output_is_an_error_not_a_lost_term():
    """A network with 8 side outputs under a card naming 7 must not drop a term silently."""
    outputs = ModelOutputs(sides=[torch.zeros(1, 1, 4, 4)] * 8, features=[],
                           prediction=torch.zeros(1, 1, 4, 4),
                           names={"sides": tuple(f"s{i}" for i in range(7))})
    terms = LossTerms.from_config({"bce": {"criterion": "bce", "outputs": "sides"}})
    with pytest.raises(ValueError, match="8 sides outputs but 7 names"):
        terms(outputs, {"mask": torch.ones(1, 1, 4, 4)})
    with pytest.raises(ValueError, match="8 sides outputs but 2 weights"):
        LossTerms.from_config({"bce": {"weight": [1, 2]}})(
            ModelOutputs(sides=outputs.sides, features=[], prediction=outputs.prediction),
            {"mask": torch.ones(1, 1, 4, 4)})


def test_bad_term_configs_are_refused():
    with pytest.raises(ValueError, match="unknown loss criterion 'dice'"):
        LossTerm(name="x", criterion="dice")
    with pytest.raises(ValueError, match=r"model.loss.x: unknown key\(s\) \['weights'\]"):
        parse_loss({"x": {"weights": 1}})
    with pytest.raises(ValueError, match="model.loss.x.resize"):
        parse_loss({"x": {"resize": "both"}})
    with pytest.raises(ValueError, match="has no output group 'edges'"):
        LossTerms.from_config({"x": {"outputs": "edges"}})(
            ModelOutputs(sides=[], features=[], prediction=torch.zeros(1, 1, 2, 2)),
            {"mask": torch.zeros(1, 1, 2, 2)})
