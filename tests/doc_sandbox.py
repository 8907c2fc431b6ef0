"""The folder in which tests/test_docs_commands.py runs the docs' shell blocks, as a user would.

What the docs' commands name, present with tiny content (32-48 px images, a few pairs):

* ``photos/``, ``new_photos/``: images; ``my/images`` + ``my/masks``, ``my/test_images`` +
  ``my/test_masks``: a custom dataset; ``data/synthetic/sod-s0-320x320-200-50/{train,val}/{im,gt}``:
  the demo's synthetic set (a few pairs under its real name);
* ``results/u2net``, ``runs/a``, ``runs/b``: saved maps, scored against ``data/DUTS-TE/DUTS-TE-Mask``,
  ``data/DIS5K/DIS-TE1/gt`` and ``data/ECSSD/gt`` (same stems);
* ``u2netp.pth``: a U2-NetP state dict (random weights) where a command names the official file;
  the slow blocks get what they name on demand (``tests/test_docs_commands.py``, ``prepare``):
  ``u2net.pth`` (random U2-Net), ``u2net.onnx`` (exported from it, in place of rembg's file),
  ``make demo``'s checkpoint (``python train.py experiment=demo``
  on the tiny settings), and ``outputs/finetune/<run>`` (the fine-tuning block of
  docs/finetune.md, run first; ``<run>`` is replaced by its name);
* ``train.py``, ``eval.py``, ``predict.py``: the repository's entry points; ``train.py`` and
  ``eval.py`` append the overrides of ``$DOC_TEST_TRAIN_OVERRIDES`` / ``$DOC_TEST_EVAL_OVERRIDES``
  (tiny sizes, one short epoch: what the demo's own settings do, smaller), so a documented
  training command runs in seconds as written.

The environment is a user's after the README's set-up: the venv's ``bin`` first on ``PATH``,
``SALSEG_HOME`` / ``SALSEG_CACHE_DIR`` empty folders of the sandbox, ``SALSEG_OFFLINE=1`` (no
downloads), ``SALSEG_DATA_ROOT`` the sandbox's ``data/``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
TRAIN_OVERRIDES = ("trainer=cpu trainer.max_epochs=1 trainer.limit_train_batches=2 "
                   "trainer.limit_val_batches=1 trainer.enable_progress_bar=false "
                   "aug.size=64 aug.crop=null data.batch_size=2 data.num_workers=0 "
                   "data.check=header")
EVAL_OVERRIDES = "progress=false input_size=[64,64] batch_size=2"

SHIM = '''"""doc-test shim: the repository's {name}, with $DOC_TEST_{var}_OVERRIDES appended."""
import os
import sys

sys.argv += os.environ.get("DOC_TEST_{var}_OVERRIDES", "").split()
from salseg.cli.{module} import main  # noqa: E402

main()
'''


def _pairs(images: Path, masks: Path | None, stems: list[str], size: int = 48, seed: int = 0,
           image_ext: str = ".jpg") -> None:
    rng = np.random.default_rng(seed)
    images.mkdir(parents=True, exist_ok=True)
    if masks is not None:
        masks.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i, stem in enumerate(stems):
        cy, cx, r = size / 2 + i, size / 2 - i, size / 4 + i
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        img[inside] = (200, 60 + 20 * i, 40)
        Image.fromarray(img).save(images / f"{stem}{image_ext}")
        if masks is not None:
            Image.fromarray((inside * 255).astype(np.uint8)).save(masks / f"{stem}.png")


def _maps(folder: Path, stems: list[str], size: int = 48, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"{stem}.png")


def build_sandbox(root: Path) -> Path:
    """Fill ``root`` with what the docs name (see the module docstring); returns ``root``."""
    stems = [f"s{i:02d}" for i in range(4)]
    _pairs(root / "photos", None, stems[:2])
    _pairs(root / "new_photos", None, stems[:2], seed=3)
    _pairs(root / "my" / "images", root / "my" / "masks", stems)
    _pairs(root / "my" / "test_images", root / "my" / "test_masks", stems[:2], seed=2)
    syn = root / "data" / "synthetic" / "sod-s0-320x320-200-50"
    for split in ("train", "val"):
        _pairs(syn / split / "im", syn / split / "gt", stems, seed=4)
    for gt in ("DUTS-TE/DUTS-TE-Mask", "DIS5K/DIS-TE1/gt", "ECSSD/gt"):
        _pairs(root / "data" / Path(gt).parent / "im", root / "data" / gt, stems, seed=5)
    for maps in ("results/u2net", "runs/a", "runs/b"):
        _maps(root / maps, stems)
    for name, var, module in (("train.py", "TRAIN", "train"), ("eval.py", "EVAL", "eval")):
        (root / name).write_text(SHIM.format(name=name, var=var, module=module))
    (root / "predict.py").write_text((REPO / "predict.py").read_text())
    for folder in ("scripts", "benchmarks"):
        target = root / folder
        if not target.exists():
            target.symlink_to(REPO / folder)
    for folder in ("home", "cache"):
        (root / folder).mkdir(exist_ok=True)
    return root


def write_weights(path: Path, model: str = "u2netp") -> Path:
    """A state dict of ``model`` (seeded random weights) where a doc names the official file
    (``u2netp.pth``, ``u2net.pth``)."""
    import torch

    from salseg.models import create_model

    if not path.exists():
        torch.manual_seed(0)
        torch.save(create_model(model).state_dict(), path)
    return path


def write_u2netp_weights(path: Path) -> Path:
    return write_weights(path, "u2netp")


def sandbox_env(root: Path) -> dict[str, str]:
    """A user's environment after ``source .venv/bin/activate``, pointed at the sandbox."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SALSEG_", "HYDRA_", "DOC_TEST_", "PYTEST_"))}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
    env["PYTHONPATH"] = str(REPO)  # this checkout's code (the venv may be shared)
    env["SALSEG_HOME"] = str(root / "home")
    env["SALSEG_CACHE_DIR"] = str(root / "cache")
    env["SALSEG_DATA_ROOT"] = str(root / "data")
    env["SALSEG_OFFLINE"] = "1"
    env["DOC_TEST_TRAIN_OVERRIDES"] = TRAIN_OVERRIDES
    env["DOC_TEST_EVAL_OVERRIDES"] = EVAL_OVERRIDES
    env["OMP_NUM_THREADS"] = "1"
    return env
