"""Fine-tuning through the path users run (issue 18): ``train()`` (what ``python train.py``
calls) with a real ``Trainer.fit`` on tiny synthetic data.  Frozen BatchNorm must hold after
the sanity check, after every validation, on resume, with ``freeze_encoder_epochs``, in both
IS-Net phases and under DDP: BatchNorm buffers unchanged bit for bit (``num_batches_tracked``
included) and every training loss equal to the eval-mode loss of the same batch and weights.
Each mode-dependent behaviour (frozen encoder stages, the IS-Net GT encoder's BatchNorm mode,
validate/test) is checked through the Trainer as well."""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from bn_probe import LossProbe, folded_model, save_folded
from fixtures.predict.helpers import random_model
from train_helpers import compose_train, tiny_data_overrides

from salseg.models.batchnorm import FrozenBatchNorm2d, batchnorm_buffers
from salseg.models.weights import save_state_dict
from salseg.training import train

PROBE = "+callbacks.probe._target_=bn_probe.LossProbe"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def folded(tmp_path_factory) -> Path:
    return save_folded(tmp_path_factory.mktemp("w") / "folded.safetensors")


@pytest.fixture(autouse=True)
def _probes():
    LossProbe.instances.clear()
    yield
    LossProbe.instances.clear()


def _fit(data_root: Path, out: Path, *overrides: str, epochs: int = 2, steps: int = 2,
         model: str = "u2netp", batch_size: int = 4) -> Path:
    cfg = compose_train([f"model={model}", "trainer=cpu", "logger=none", f"trainer.max_epochs={epochs}",
                         f"trainer.limit_train_batches={steps}", "trainer.num_sanity_val_steps=1",
                         "trainer.enable_progress_bar=false", "callbacks.model_checkpoint.save_top_k=-1",
                         *tiny_data_overrides(data_root, size=64, n_train=8, n_val=4, batch_size=batch_size),
                         *overrides], out)
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


def _state(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def _assert_frozen(probe: LossProbe, ckpt: Path, start: dict[str, torch.Tensor], prefix: str = "model."):
    """Every loss equals the eval-mode loss, and the BatchNorm buffers are those we started
    from, in memory and in the checkpoint."""
    assert probe.steps
    for step, eval_loss, train_loss in probe.steps:
        # train-mode BatchNorm gives a different function (losses off by a factor, not rounding)
        assert train_loss == pytest.approx(eval_loss, rel=1e-5), step
    assert probe.start_buffers and probe.end_buffers.keys() == probe.start_buffers.keys()
    for key, value in probe.start_buffers.items():
        assert torch.equal(probe.end_buffers[key], value), key
    state = _state(ckpt)
    assert start
    for key, value in start.items():
        assert torch.equal(state[prefix + key], value), key


def _changed(ckpt: Path, start: dict[str, torch.Tensor], prefix: str = "model.") -> bool:
    state = _state(ckpt)
    return any(not torch.equal(state[prefix + k], v) for k, v in start.items())


def _project_ckpt(model: torch.nn.Module, name: str, path: Path) -> Path:
    """A project checkpoint as a finished run writes it (``model.`` keys, the architecture's name)."""
    torch.save({"pytorch-lightning_version": L.__version__, "hyper_parameters": {"name": name},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def test_folded_import_keeps_frozen_batchnorm_through_fit_and_resume(data_root, folded, tmp_path):
    """``model.freeze_bn=auto`` on folded weights: sanity check, 2 epochs with a validation
    between them, then a resume from ``last.ckpt`` for a third epoch."""
    start = batchnorm_buffers(folded_model())
    weights = {k: v for k, v in folded_model().state_dict().items() if k.endswith("weight")}
    ckpt = _fit(data_root, tmp_path, f"model.init_weights={folded}", PROBE)
    _assert_frozen(LossProbe.instances[-1], ckpt, start)
    assert len(LossProbe.instances[-1].steps) == 4
    assert _changed(ckpt, weights)  # it trained
    resumed = _fit(data_root, tmp_path, f"model.init_weights={folded}", PROBE, f"ckpt_path={ckpt}",
                   epochs=3)
    probe = LossProbe.instances[-1]
    assert [s for s, _, _ in probe.steps] == [4, 5]
    _assert_frozen(probe, resumed, start)


@pytest.mark.parametrize("source", ["pth", "ckpt"])
def test_freeze_bn_true_from_official_pth_and_project_ckpt(data_root, tmp_path, source):
    """Real BatchNorm statistics (an official ``.pth``, a project ``.ckpt``) with
    ``model.freeze_bn=true`` (small-batch fine-tuning)."""
    model = random_model("u2netp", seed=3)
    start = batchnorm_buffers(model)
    if source == "pth":
        path = save_state_dict(model, tmp_path / "official.pth")
    else:
        path = _project_ckpt(model, "u2netp", tmp_path / "run.ckpt")
    ckpt = _fit(data_root, tmp_path / "run", f"model.init_weights={path}", "model.freeze_bn=true", PROBE)
    _assert_frozen(LossProbe.instances[-1], ckpt, start)


def test_live_batchnorm_still_trains_by_default(data_root, tmp_path):
    """The counter-check: real statistics and ``freeze_bn=auto`` train BatchNorm as the papers
    do (batch statistics, running statistics updated once per step)."""
    model = random_model("u2netp", seed=3)
    path = save_state_dict(model, tmp_path / "official.pth")
    ckpt = _fit(data_root, tmp_path / "run", f"model.init_weights={path}", epochs=1)
    state = _state(ckpt)
    counters = [v for k, v in state.items() if k.endswith("num_batches_tracked")]
    assert counters and all(int(c) == 2 for c in counters)
    task_bns = [m for m in random_model().modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert task_bns


def test_freeze_encoder_epochs_through_fit(data_root, folded, tmp_path):
    """``model.freeze_encoder_epochs=1``: stages 1-6 do not change in epoch 0 and train in epoch
    1, the decoder trains throughout; BatchNorm stays frozen in both."""
    start = batchnorm_buffers(folded_model())
    ckpt = _fit(data_root, tmp_path, f"model.init_weights={folded}", "model.freeze_encoder_epochs=1", PROBE)
    probe = LossProbe.instances[-1]
    _assert_frozen(probe, ckpt, start)
    first, second = probe.epoch_params
    initial = probe.start_params
    reference = folded_model().state_dict()  # built once (not once per parameter: 100 s)
    assert all(torch.equal(v, reference[k]) for k, v in initial.items())
    encoder = [k for k in initial if k.startswith(tuple(f"stage{i}." for i in range(1, 7)))]
    decoder = [k for k in initial if k.startswith("stage5d.")]
    assert encoder and decoder
    assert all(torch.equal(first[k], initial[k]) for k in encoder)
    assert any(not torch.equal(first[k], initial[k]) for k in decoder)
    assert any(not torch.equal(second[k], first[k]) for k in encoder)


def test_validate_and_test_leave_batchnorm_alone(data_root, folded, tmp_path):
    """``Trainer.validate`` / ``Trainer.test``-style evaluation runs in eval mode and changes no
    buffer, frozen or live; the task's modes are what they were before."""
    from hydra.utils import instantiate

    from salseg.training import task_config

    for init, freeze in ((folded, "auto"), (None, "false")):
        cfg = compose_train(["model=u2netp", "trainer=cpu", "logger=none", "trainer.enable_progress_bar=false",
                             *tiny_data_overrides(data_root, size=64, n_train=8, n_val=4),
                             f"model.init_weights={init or 'null'}", f"model.freeze_bn={freeze}"], tmp_path)
        datamodule = instantiate(cfg.data)
        task = instantiate(task_config(cfg.model), input_size=list(datamodule.input_size), _convert_="all")
        before = batchnorm_buffers(task)
        modes = {n: m.training for n, m in task.named_modules()}
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                            enable_checkpointing=False)
        first = trainer.validate(task, datamodule=datamodule, verbose=False)
        second = trainer.validate(task, datamodule=datamodule, verbose=False)
        assert first == second
        after = batchnorm_buffers(task)
        assert all(torch.equal(after[k], v) for k, v in before.items())
        assert {n: m.training for n, m in task.named_modules()} == modes
        frozen = [m for m in task.model.modules() if isinstance(m, FrozenBatchNorm2d)]
        assert bool(frozen) == (init is not None)


# the .pth / .ckpt paths of U2-NetP are fast-tested above; IS-Net's (20 s each) run with the slow suite
@pytest.mark.parametrize("source", ["onnx", pytest.param("pth", marks=pytest.mark.slow),
                                    pytest.param("ckpt", marks=pytest.mark.slow)])
def test_isnet_finetune_from_onnx_pth_and_ckpt(data_root, tmp_path, source):
    """IS-Net fine-tuning as docs/finetune.md says (``model=isnet model.feature_sync=false``)
    from each kind of file users start from: an ONNX graph (BatchNorm folded by the export, as
    in rembg's ``isnet-general-use.onnx``; frozen by ``freeze_bn=auto``), an official ``.pth``
    and a project ``.ckpt`` (real statistics, ``model.freeze_bn=true``)."""
    from salseg.export.onnx import export_onnx
    from salseg.models import create_model
    from salseg.models.onnx_import import onnx_to_state_dict

    model = random_model("isnet", seed=6)
    overrides = ["model.feature_sync=false", PROBE]
    if source == "onnx":
        path = export_onnx(model, tmp_path / "isnet.onnx", "isnet", trace_size=64, check=False).path
        imported = create_model("isnet")
        imported.load_state_dict(onnx_to_state_dict(path), strict=True)
        start = batchnorm_buffers(imported)
    else:
        start = batchnorm_buffers(model)
        path = (save_state_dict(model, tmp_path / "isnet.pth") if source == "pth"
                else _project_ckpt(model, "isnet", tmp_path / "run.ckpt"))
        overrides.append("model.freeze_bn=true")
    ckpt = _fit(data_root, tmp_path / "run", f"model.init_weights={path}", *overrides, model="isnet",
                epochs=1, steps=1, batch_size=2)  # sanity check, a step (validations: tests above)
    _assert_frozen(LossProbe.instances[-1], ckpt, start)


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_isnet_phase2_gt_encoder_mode_through_fit(data_root, tmp_path, bn_mode):
    """Phase 2 with a GT encoder: ``gt_encoder_bn=eval`` keeps its statistics fixed (targets
    fixed); ``train`` (official) runs it on batch statistics, updated once per step."""
    encoder = random_model("isnet_gt_encoder", seed=2)
    enc_path = save_state_dict(encoder, tmp_path / "enc.pth")
    start = batchnorm_buffers(encoder)
    ckpt = _fit(data_root, tmp_path / "run", f"model.gt_encoder_ckpt={enc_path}",
                f"model.gt_encoder_bn={bn_mode}", "+callbacks.probe.compare=false",
                PROBE, model="isnet", epochs=2, steps=1, batch_size=2)
    state = _state(ckpt)
    if bn_mode == "eval":
        # (the IS-Net itself has live BatchNorm here: only the GT encoder's statistics are fixed)
        for key, value in start.items():
            assert torch.equal(state[f"gt_encoder.{key}"], value), key
    else:
        counters = [v for k, v in state.items()
                    if k.startswith("gt_encoder.") and k.endswith("num_batches_tracked")]
        assert counters and all(int(c) == 2 for c in counters)  # 2 steps, one validation between


def test_isnet_phase1_gt_encoder_with_frozen_batchnorm(data_root, tmp_path):
    """Phase 1 (``model=isnet_gt_encoder``) from folded weights keeps BatchNorm frozen too."""
    path = save_folded(tmp_path / "enc.safetensors", name="isnet_gt_encoder", seed=4)
    start = batchnorm_buffers(folded_model("isnet_gt_encoder", seed=4))
    ckpt = _fit(data_root, tmp_path / "run", f"model.init_weights={path}", "model.stop_max_f=null",
                PROBE, model="isnet_gt_encoder", epochs=2, steps=1, batch_size=2)
    _assert_frozen(LossProbe.instances[-1], ckpt, start)


@pytest.mark.slow
def test_ddp_two_processes_keep_batchnorm_frozen(data_root, folded, tmp_path):
    """2 CPU processes (gloo, ``ddp_spawn``), with ``sync_batchnorm=true`` (SyncBatchNorm
    conversion must not thaw the frozen statistics) and ``freeze_encoder_epochs=1`` (the DDP
    reducer must not wait for gradients of the frozen encoder)."""
    start = batchnorm_buffers(folded_model())
    cfg = compose_train(["model=u2netp", "trainer=ddp_cpu", "logger=none", "trainer.max_epochs=2",
                         "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false",
                         "trainer.sync_batchnorm=true", f"model.init_weights={folded}",
                         "model.freeze_encoder_epochs=1",
                         *tiny_data_overrides(data_root, size=64, n_train=16, n_val=4, batch_size=2)],
                        tmp_path)
    train(cfg)
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    state = _state(Path(summary["last_checkpoint"]))
    for key, value in start.items():
        assert torch.equal(state[f"model.{key}"], value), key


@pytest.mark.slow
def test_compiled_model_keeps_batchnorm_frozen(data_root, folded, tmp_path):
    """``model.compile=true``: the compiled graph normalises with the frozen statistics."""
    start = batchnorm_buffers(folded_model())
    ckpt = _fit(data_root, tmp_path, f"model.init_weights={folded}", "model.compile=true", PROBE,
                epochs=2, steps=1)
    _assert_frozen(LossProbe.instances[-1], ckpt, start)
