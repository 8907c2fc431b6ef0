"""Training: config composition, fast_dev_run of every model, learning, IS-Net's two phases,
resume and DDP (tiny synthetic data on CPU)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from parity_helpers import deterministic_state_dict, fixture
from train_helpers import compose_train, spy_on_trainers, tiny_data_overrides

from salseg.config import CONFIG_DIR
from salseg.models import create_model
from salseg.training import task_config, train

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}", "trainer.accelerator=cpu",
                         "trainer.devices=1", "trainer.strategy=auto"], tmp_path)
    assert cfg.model._target_.startswith("salseg.tasks.")
    assert cfg.data._target_ == "salseg.data.datamodule.SegDataModule"
    instantiate(cfg.trainer, logger=False, enable_checkpointing=False)


@pytest.mark.parametrize("experiment,model,batch,aug", [
    ("u2net_duts", "u2net", 12, "u2net_paper"),
    ("u2netp_duts", "u2netp", 12, "u2net_paper"),
    ("isnet_dis5k", "isnet", 8, "isnet_paper"),
    ("u2net_dis5k", "u2net", 8, "isnet_paper"),
])
def test_paper_recipes(experiment, model, batch, aug, tmp_path):
    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    assert cfg.model.name == model and cfg.data.batch_size == batch and cfg.aug.name == aug
    opt = cfg.model.optimizer
    assert (opt._target_, opt.lr, list(opt.betas), opt.eps, opt.weight_decay) == (
        "torch.optim.Adam", 0.001, [0.9, 0.999], 1e-8, 0)


def test_u2net_dis5k_is_the_dis_protocol_with_u2nets_own_loss(tmp_path):
    """The DIS paper's U2-Net baseline: everything of isnet_dis5k but the network (its own
    7-term BCE and its own input normalisation), validated with the DIS script's maxF."""
    from omegaconf import OmegaConf

    def plain(cfg, key):
        return OmegaConf.to_container(cfg[key], resolve=True)

    isnet = compose_train(["experiment=isnet_dis5k"], tmp_path)
    u2net = compose_train(["experiment=u2net_dis5k"], tmp_path)
    for key in ("trainer", "callbacks"):
        assert plain(u2net, key) == plain(isnet, key), key
    data_i, data_u = plain(isnet, "data"), plain(u2net, "data")
    aug_i, aug_u = data_i.pop("aug"), data_u.pop("aug")
    assert data_u == data_i
    assert (aug_i.pop("normalization"), aug_u.pop("normalization")) == ("isnet", "u2net")
    assert aug_u == aug_i
    model = u2net.model
    assert model._target_ == "salseg.tasks.TrainingTask"
    assert plain(u2net, "model")["loss"] == {"bce": {"criterion": "bce", "outputs": "sides",
                                                      "weight": 1}}  # BCE on every side
    assert model.val_convention == isnet.model.val_convention == "dis_valid"
    assert "feature_sync" not in model and u2net.task_name == "u2net_dis5k"


@pytest.mark.parametrize("model", ["u2netp", "isnet_gt_encoder"])
def test_fast_dev_run(model, data_root, tmp_path):
    cfg = compose_train([f"model={model}", "trainer=cpu", "debug=fast_dev_run", "logger=none",
                         *tiny_data_overrides(data_root)], tmp_path)
    train(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["u2net", "isnet"])
def test_fast_dev_run_large_models(model, data_root, tmp_path):
    extra = ["model.feature_sync=false"] if model == "isnet" else []
    cfg = compose_train([f"model={model}", "trainer=cpu", "debug=fast_dev_run", "logger=none",
                         *extra, *tiny_data_overrides(data_root)], tmp_path)
    train(cfg)


def test_u2net_task_loss_equals_official_loss():
    """The task's loss on the official outputs (as logits) equals muti_bce_loss_fusion."""
    fx = fixture("u2netp")
    task = instantiate(task_config(compose_train(["model=u2netp"], Path("/tmp/salseg-test")).model))
    probs = [torch.from_numpy(fx[k]).double() for k in ["fused"] + [f"side{i}" for i in range(1, 7)]]
    logits = [torch.log(p) - torch.log1p(-p) for p in probs]
    loss, terms = task.compute_loss({"mask": torch.from_numpy(fx["target"]).double()}, logits)
    assert abs(float(loss) - float(fx["loss_total"])) < 1e-4
    assert abs(float(terms["bce_fused"]) - float(fx["loss_fused"])) < 1e-4


def test_isnet_task_phase2_step_matches_official(tmp_path):
    """IS-Net's training task (model=isnet) with the official weights = the official phase-2 step."""
    fx = fixture("isnetdis")
    enc = create_model("isnet_gt_encoder")
    enc.load_state_dict(deterministic_state_dict("isnet_gt_encoder"))
    enc_path = tmp_path / "enc.pth"
    torch.save(enc.state_dict(), enc_path)
    cfg = compose_train(["model=isnet", f"model.gt_encoder_ckpt={enc_path}"], tmp_path)
    task = instantiate(task_config(cfg.model))
    task.model.load_state_dict(deterministic_state_dict("isnetdis"))
    task.train()
    assert task.gt_encoder.training and not any(p.requires_grad for p in task.gt_encoder.parameters())
    batch = {"image": torch.from_numpy(fx["train_input"]), "mask": torch.from_numpy(fx["train_target"])}
    loss, terms = task.compute_loss(batch, task(batch["image"]))
    assert abs(float(loss) - float(fx["train_loss_kl_MSE_loss"])) < 1e-3
    assert abs(float(terms["bce_side1"]) - float(fx["train_loss_kl_MSE_loss0"])) < 1e-3
    # eval-mode BatchNorm option: the encoder's BatchNorms are frozen, whatever the mode
    # (through Trainer.fit: tests/test_finetune_fit.py)
    from salseg.models.batchnorm import FrozenBatchNorm2d

    cfg2 = compose_train(["model=isnet", f"model.gt_encoder_ckpt={enc_path}", "model.gt_encoder_bn=eval"], tmp_path)
    task2 = instantiate(task_config(cfg2.model)).train()
    bns = [m for m in task2.gt_encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm | FrozenBatchNorm2d)]
    assert bns and all(isinstance(m, FrozenBatchNorm2d) for m in bns) and task2.model.training


def test_isnet_without_gt_encoder_is_a_clear_error(tmp_path):
    cfg = compose_train(["model=isnet"], tmp_path)
    with pytest.raises(Exception, match="gt_encoder_ckpt"):
        instantiate(task_config(cfg.model))
    cfg = compose_train(["model=isnet", "model.feature_sync=false"], tmp_path)
    assert instantiate(task_config(cfg.model)).gt_encoder is None


def test_overfit_one_batch_loss_falls(data_root, tmp_path):
    cfg = compose_train(["model=u2netp", "trainer=cpu", "debug=overfit", "trainer.max_epochs=12",
                         "logger=csv", "trainer.log_every_n_steps=1", "callbacks=none",
                         "trainer.limit_val_batches=0",
                         "model.optimizer.lr=0.003",
                         *tiny_data_overrides(data_root, size=64, n_train=16, n_val=8, batch_size=4)],
                        tmp_path)
    train(cfg)
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("train/loss")
    losses = [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]]
    assert len(losses) == 12
    assert losses[-1] < 0.5 * losses[0]


def test_learning_loss_falls_and_max_f_rises(data_root, tmp_path):
    overrides = ["model=u2netp", "trainer=cpu", "logger=csv", "trainer.max_epochs=6",
                 "trainer.log_every_n_steps=1",
                 "callbacks.model_checkpoint.save_top_k=1", "model.optimizer.lr=0.003",
                 *tiny_data_overrides(data_root, size=64, n_train=32, n_val=8, batch_size=8)]
    cfg = compose_train(overrides, tmp_path)
    best = train(cfg)
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    losses = [float(r.split(",")[header.index("train/loss")]) for r in rows[1:]
              if r.split(",")[header.index("train/loss")]]
    max_fs = [float(r.split(",")[header.index("val/maxF")]) for r in rows[1:]
              if r.split(",")[header.index("val/maxF")]]
    assert losses[-1] < losses[0]
    assert max_fs[-1] > max_fs[0] and best == pytest.approx(max(max_fs))
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert Path(summary["last_checkpoint"]).is_file()


def test_ddp_two_cpu_processes(data_root, tmp_path):
    """2 CPU processes (gloo) end to end: training, validation metrics synced, rank 0 writes."""
    cfg = compose_train(["model=u2netp", "trainer=ddp_cpu", "logger=csv", "trainer.max_epochs=1",
                         "trainer.log_every_n_steps=1",
                         *tiny_data_overrides(data_root, size=64, n_train=16, n_val=8, batch_size=4)],
                        tmp_path)
    best = train(cfg)
    assert best is not None and 0.0 <= best <= 1.0
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert Path(summary["last_checkpoint"]).is_file()


class _Crash(Exception):
    pass


def _losses(csv_path: Path) -> dict[int, float]:
    rows = csv_path.read_text().splitlines()
    header = rows[0].split(",")
    step, col = header.index("step"), header.index("train/loss")
    return {int(r.split(",")[step]): float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]}


def test_resume_continues_with_identical_losses(data_root, tmp_path, monkeypatch):
    """Kill training mid-run (an exception in epoch 2), resume from the last epoch-boundary
    checkpoint: the following losses equal those of an uninterrupted run."""
    import lightning as L

    base = ["model=u2netp", "trainer=cpu", "logger=csv", "trainer.max_epochs=2",
            "trainer.log_every_n_steps=1", "callbacks.model_checkpoint.save_top_k=-1",
            "callbacks.model_checkpoint.filename='ep{epoch:02d}'",
            *tiny_data_overrides(data_root, size=64, n_train=12, n_val=4, batch_size=4)]
    full = _losses(_run(base, tmp_path / "full"))

    class CrashAt(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == 4:
                raise _Crash("simulated crash")

    import salseg.training.trainer as training

    orig = training.instantiate_list
    monkeypatch.setattr(training, "instantiate_list",
                        lambda cfg: orig(cfg) + ([CrashAt()] if cfg is not None and "model_checkpoint" in cfg else []))
    with pytest.raises(_Crash):
        _run(base, tmp_path / "crashed")
    monkeypatch.setattr(training, "instantiate_list", orig)
    ckpt = tmp_path / "crashed" / "checkpoints" / "ep00.ckpt"
    assert ckpt.is_file()
    resumed = _losses(_run(base + [f"ckpt_path={ckpt}"], tmp_path / "resumed"))
    later = sorted(s for s in full if s >= 3)
    assert later and all(s in resumed for s in later)
    for s in later:
        assert resumed[s] == pytest.approx(full[s], rel=1e-6, abs=1e-7), s


def _run(overrides: list[str], out: Path) -> Path:
    train(compose_train(overrides, out))
    return out / "csv" / "metrics.csv"


def test_isnet_two_phases_in_one_command(data_root, tmp_path, monkeypatch):
    """`python train.py model=isnet` without a GT encoder runs phase 1, then phase 2; phase 1
    takes the datamodule's masks-only mode (validated on the training masks, no monitor set)."""
    import salseg.training.phases as phases

    phase1 = spy_on_trainers(phases, monkeypatch)
    cfg = compose_train(["model=isnet", "trainer=cpu", "logger=csv", "trainer.max_epochs=1",
                         "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                         "model.gt_encoder.max_epochs=1",
                         "+data.monitor=[{kind: synthetic, split: val, name: mon}]",
                         *tiny_data_overrides(data_root, size=64, n_train=8, n_val=4, batch_size=2)],
                        tmp_path)
    train(cfg)
    dm = phase1["trainer"].datamodule
    assert dm.mask_only and dm.val_pairs == dm.train_pairs and dm.monitor_sets == []
    enc = tmp_path / "gt_encoder" / "gt_encoder.ckpt"
    assert enc.is_file()
    assert (tmp_path / "gt_encoder" / "checkpoints" / "last.ckpt").is_file()
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    ckpt = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["gt_encoder_ckpt"] == str(enc)
    assert any(k.startswith("gt_encoder.") for k in ckpt["state_dict"])


def test_threshold_stopping_is_the_official_phase1_rule():
    from types import SimpleNamespace

    from salseg.training.callbacks import ThresholdStopping

    cb = ThresholdStopping(monitor="val/maxF", threshold=0.99)
    trainer = SimpleNamespace(sanity_checking=False, should_stop=False,
                              callback_metrics={"val/maxF": torch.tensor(0.99, dtype=torch.float64)})
    cb.on_validation_end(trainer, None)
    assert not trainer.should_stop  # strictly greater, as the official `> 0.99`
    trainer.callback_metrics["val/maxF"] = torch.tensor(0.985)
    cb.on_validation_end(trainer, None)
    assert not trainer.should_stop
    trainer.callback_metrics["val/maxF"] = torch.tensor(0.9901)
    cb.on_validation_end(trainer, None)
    assert trainer.should_stop and cb.reached


def test_bf16_channels_last_and_tensorboard_images(data_root, tmp_path):
    cfg = compose_train(["model=u2netp", "trainer=cpu", "trainer.precision=bf16-mixed",
                         "model.channels_last=true", "trainer.max_epochs=1",
                         "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                         "model.log_images_every_n_steps=1", "trainer.log_every_n_steps=1",
                         *tiny_data_overrides(data_root)], tmp_path)
    train(cfg)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/images", "val/images"} <= set(tags["images"])
    assert {"train/loss", "train/bce_fused", "val/maxF", "val/mae"} <= set(tags["scalars"])
    assert any(t.startswith("lr-") for t in tags["scalars"])
