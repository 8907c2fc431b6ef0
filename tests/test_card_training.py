"""Card -> training: every card's default training config agrees with the card (task, recipe,
loss), and a card defined outside the package trains through ``train.py`` untouched."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra.utils import get_class, instantiate
from train_helpers import compose_train, tiny_data_overrides

from salseg.config import CONFIG_DIR
from salseg.losses.terms import parse_loss
from salseg.models.card import cards
from salseg.training import task_config

ROOT = Path(__file__).resolve().parent.parent
CONFIGURED = [c.name for c in cards() if (CONFIG_DIR / "model" / f"{c.name}.yaml").is_file()]


def test_every_card_has_a_training_config():
    assert sorted(CONFIGURED) == sorted(c.name for c in cards())


@pytest.mark.parametrize("name", CONFIGURED)
def test_default_training_config_agrees_with_the_card(name, tmp_path):
    card = next(c for c in cards() if c.name == name)
    cfg = compose_train([f"model={name}"], tmp_path)
    assert cfg.model.name == card.name
    assert issubclass(get_class(cfg.model._target_), get_class(card.task))
    assert cfg.aug.name == card.default_aug
    form = cfg.model.loss_form
    assert parse_loss(cfg.model.loss, form) == parse_loss(card.loss, form)
    # the task built from it (no GT encoder needed: feature sync off) reads the card's loss
    overrides = ["model.feature_sync=false"] if card.gt_encoder else []
    cfg = compose_train([f"model={name}", *overrides], tmp_path)
    task = instantiate(task_config(cfg.model))
    wanted = [t for t in parse_loss(card.loss, form) if t.target != "gt_encoder"]
    assert task.criterion.terms == wanted
    assert task.card is card


TOY = textwrap.dedent('''
    """A toy architecture registered from outside salseg (tests/test_card_training.py)."""
    import torch
    from dataclasses import replace
    from torch import nn

    from salseg.models.card import ModelCard, ModelOutputs, register_card
    from salseg.models.u2net import U2NET_PREPROCESSING


    class Toy(nn.Module):
        def __init__(self, in_ch=3):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(in_ch, 4, 3, padding=1), nn.ReLU())
            self.heads = nn.ModuleList(nn.Conv2d(4, 1, 1) for _ in range(3))

        def forward(self, x):
            y = self.body(x)
            return [h(y) for h in self.heads]


    register_card(ModelCard(
        name="toy3", build=Toy, preprocessing=replace(U2NET_PREPROCESSING, input_size=(32, 32)),
        outputs=lambda raw: ModelOutputs(sides=list(raw), features=[], prediction=raw[0]),
        to_official=lambda raw: [torch.sigmoid(t) for t in raw],
        side_names=("fine", "mid", "coarse"),
        loss={"bce": {"criterion": "bce", "outputs": "sides"},
              "iou": {"criterion": "iou", "outputs": "sides", "weight": [0.5, 0, 0]}}))
''')


def test_a_toy_card_trains_through_train_py(tmp_path):
    """A card in a module outside salseg (named by SALSEG_MODEL_MODULES) trains two steps
    through ``train.py`` with ``model=...`` overrides only; its loss comes from the card and the
    logged term names from its output names."""
    (tmp_path / "toy_card_plugin.py").write_text(TOY)
    run = tmp_path / "run"
    (tmp_path / "data").mkdir()
    env = {**os.environ, "SALSEG_MODEL_MODULES": "toy_card_plugin",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    cmd = [sys.executable, str(ROOT / "train.py"), "model=u2netp", "model.name=toy3",
           "~model.loss", "trainer=cpu", "trainer.max_steps=2", "trainer.max_epochs=1",
           "trainer.limit_val_batches=0", "trainer.log_every_n_steps=1", "callbacks=none",
           "logger=csv", "model.log_images_every_n_steps=0", f"hydra.run.dir={run}",
           *tiny_data_overrides(tmp_path / "data", size=32, n_train=4, n_val=2, batch_size=2)]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(next(run.rglob("metrics.csv")), newline="")))
    logged = {k for r in rows for k, v in r.items() if v}
    assert {"train/bce_fine", "train/bce_mid", "train/bce_coarse", "train/iou_fine",
            "train/loss_bce", "train/loss_iou"} <= logged
    assert sum(1 for r in rows if r.get("train/loss")) == 2


def test_salseg_models_cards_lists_the_registry_with_plugins(tmp_path):
    """``salseg-models cards`` lists every registered card (the names ``--model`` / ``model=``
    accept), the built-in ones and a plugin's, read from the registry, not from a list."""
    (tmp_path / "toy_card_plugin.py").write_text(TOY)
    env = {**os.environ, "SALSEG_MODEL_MODULES": "toy_card_plugin",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    result = subprocess.run(["salseg-models", "cards"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    assert {"u2net", "u2netp", "isnet", "isnet_gt_encoder", "birefnet", "toy3"} <= set(lines)
    assert "fine, mid, coarse" in lines["toy3"] and "no (takes masks)" in lines["isnet_gt_encoder"]
