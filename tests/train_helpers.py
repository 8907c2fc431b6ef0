"""Compose and run training configs in-process for the tests (tiny synthetic data, CPU)."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from salseg.config import CONFIG_DIR


def tiny_data_overrides(data_root: Path, size: int = 64, n_train: int = 16, n_val: int = 8,
                        batch_size: int = 4) -> list[str]:
    return [
        "data=synthetic", f"data.root={data_root}", f"data.synthetic.size=[{size},{size}]",
        f"data.synthetic.n_train={n_train}", f"data.synthetic.n_val={n_val}",
        f"data.batch_size={batch_size}", "data.num_workers=0", "data.check=header",
        f"aug.size={size}", "aug.crop=null",
    ]


def compose_train(overrides: list[str], out_dir: Path) -> DictConfig:
    """The ``train`` config with ``overrides``, with Hydra's runtime set to ``out_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir)
    HydraConfig.instance().set_config(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    return cfg


def run_train_cli(args: list[str], monkeypatch) -> tuple[int, str]:
    """``salseg-train ARGS`` run in this process as the console script runs it: the exit code
    and what it wrote to stderr."""
    import io
    import sys
    from contextlib import redirect_stderr

    from salseg.cli.train import main

    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", ["salseg-train", *args])
    buf = io.StringIO()
    code = 0
    with redirect_stderr(buf):
        try:
            main()
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, buf.getvalue()


def spy_on_trainers(module, monkeypatch) -> dict:
    """Record the ``Trainer`` that ``module.make_trainer`` builds (under key ``"trainer"``)."""
    seen: dict = {}
    orig = module.make_trainer

    def spy(*args, **kwargs):
        seen["trainer"] = orig(*args, **kwargs)
        return seen["trainer"]

    monkeypatch.setattr(module, "make_trainer", spy)
    return seen
