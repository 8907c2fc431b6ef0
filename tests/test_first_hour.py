"""A new user's first hour (issue 20): a failed run does not block its name (item 4), and a
normal run is free of third-party noise (item 8)."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf
from train_helpers import run_train_cli as _cli
from train_helpers import tiny_data_overrides

REPO = Path(__file__).resolve().parent.parent
FAST = ["model=u2netp", "trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false"]


def test_a_failed_run_does_not_block_its_name_and_a_normal_run_is_quiet(tmp_path, monkeypatch):
    run = tmp_path / "run"
    empty = tmp_path / "empty"
    empty.mkdir()
    # 1. the data is missing: the run fails after Lightning created tensorboard/
    code, err = _cli([*FAST, "data=duts", f"data.root={empty}", f"hydra.run.dir={run}"],
                     monkeypatch)
    assert code == 2 and "salseg-train: error:" in err and "DUTS" in err, err
    assert (run / "tensorboard").is_dir() and (run / "train_summary.json").is_file()
    # 2. the retry under the same name, with data, as a user runs it
    (tmp_path / "data").mkdir()
    data = tiny_data_overrides(tmp_path / "data", size=32, n_train=4, n_val=2, batch_size=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALSEG_", "HYDRA_"))}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "train.py", *FAST, *data, "trainer.log_every_n_steps=50",
                           f"hydra.run.dir={run}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "already holds a run" not in out
    assert (run / "checkpoints" / "last.ckpt").is_file()
    # 3. no noise: litlogger tip, LeafSpec warning, FLOPs column of zeros, log interval warning
    for noise in ("litlogger", "LeafSpec", "FLOPs", "Total Flops", "smaller than the logging interval",
                  "ModelSummary"):
        assert noise not in out, (noise, out[-3000:])
    assert "Total params" in out  # the model summary itself is kept
    assert not list(run.glob("*.log")), list(run.iterdir())  # no empty train.log


def test_the_guard_names_last_ckpt_only_when_it_exists(tmp_path):
    import pytest

    from salseg.training.checks import ConfigError, check_run_dir

    cfg = OmegaConf.create({"ckpt_path": None, "overwrite": False})
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch000.ckpt").write_bytes(b"x")
    with pytest.raises(ConfigError) as info:
        check_run_dir(tmp_path, cfg)
    assert "ckpt_path=" not in str(info.value) and "overwrite=true" in str(info.value)
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="ckpt_path=.*last.ckpt"):
        check_run_dir(tmp_path, cfg)


def test_asked_for_random_weights_log_no_warning(caplog):
    from salseg.predict.predictor import build_model

    with caplog.at_level(logging.INFO):
        build_model(None, "u2netp")
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.records


def test_workers_are_capped_at_the_machine(monkeypatch):
    from salseg.data import options

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert options.workers_for_machine(4) == 2
    assert options.workers_for_machine(1) == 1 and options.workers_for_machine(0) == 0
