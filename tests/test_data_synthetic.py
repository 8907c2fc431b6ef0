"""Synthetic set: deterministic, exact masks, atomic and fast generation, not trivially separable,
and (slow) learnable by U2-NetP in a few CPU minutes."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_helpers import isolated_cache  # noqa: F401 (autouse fixture)

from salseg.cli.data import main as data_main
from salseg.data.synthetic import ensure_synthetic, make_spec, render_pair, synthetic_dir


def test_render_is_deterministic_and_seeded():
    spec = make_spec(size=96)
    a_img, a_m = render_pair(spec, "train", 3)
    b_img, b_m = render_pair(spec, "train", 3)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_m, b_m)
    c_img, _ = render_pair(make_spec(size=96, seed=1), "train", 3)
    d_img, _ = render_pair(spec, "val", 3)
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_img, d_img)
    assert a_img.shape == (96, 96, 3) and a_img.dtype == np.uint8


def test_masks_are_binary_non_empty_and_varied():
    spec = make_spec(size=96)
    fracs = []
    for i in range(20):
        _, m = render_pair(spec, "train", i)
        assert set(np.unique(m)) <= {0, 255} and m.any()
        fracs.append((m > 0).mean())
    assert 0.03 < np.mean(fracs) < 0.6 and np.std(fracs) > 0.02


def test_dis_variant_has_thin_structures():
    spec = make_spec("dis", size=(192, 256))
    thin = 0
    for i in range(12):
        _, m = render_pair(spec, "train", i)
        fg = m > 0
        # pixels whose 5x5 neighbourhood is not all foreground while being 'line-like':
        # erode by 2 px; thin parts vanish
        er = fg.copy()
        for dy in (-2, -1, 0, 1, 2):
            for dx in (-2, -1, 0, 1, 2):
                er &= np.roll(np.roll(fg, dy, 0), dx, 1)
        thin += int(fg.sum() - er.sum() > 0.25 * fg.sum())
    assert thin >= 3


def test_global_threshold_does_not_separate():
    """No global intensity threshold (either polarity) separates foreground from background;
    even the best threshold chosen per image (an oracle) stays far from a trained model."""
    spec = make_spec(size=96)
    thresholds = range(0, 256, 8)
    scores = np.zeros((12, len(thresholds), 2))
    for i in range(12):
        img, m = render_pair(spec, "val", i)
        lum = img.astype(np.float32).mean(axis=2)
        gt = m > 0
        for j, t in enumerate(thresholds):
            for k, pred in enumerate((lum >= t, lum < t)):
                tp = (pred & gt).sum()
                p, r = tp / max(pred.sum(), 1), tp / max(gt.sum(), 1)
                scores[i, j, k] = 1.3 * p * r / max(0.3 * p + r, 1e-8)
    assert scores.mean(axis=0).max() < 0.45  # one threshold for the data set
    assert scores.max(axis=(1, 2)).mean() < 0.8  # per-image oracle threshold


def test_ensure_is_atomic_cached_and_fast(tmp_path):
    spec = make_spec(size=64, n_train=20, n_val=5)
    t0 = time.perf_counter()
    folder = ensure_synthetic(tmp_path, spec, verbose=False)
    assert time.perf_counter() - t0 < 5.0
    assert folder == synthetic_dir(tmp_path, spec) and (folder / "manifest.json").is_file()
    assert len(list((folder / "train" / "im").glob("*.jpg"))) == 20
    assert len(list((folder / "val" / "gt").glob("*.png"))) == 5
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp")]
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert ensure_synthetic(tmp_path, spec, verbose=False) == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp  # not regenerated
    m = np.asarray(Image.open(folder / "train" / "gt" / "syn_train_0000.png"))
    assert np.array_equal(m, render_pair(spec, "train", 0)[1])  # exact mask on disk


def test_incomplete_folder_is_rebuilt(tmp_path):
    spec = make_spec(size=48, n_train=3, n_val=2)
    folder = synthetic_dir(tmp_path, spec)
    (folder / "train" / "im").mkdir(parents=True)  # an interrupted foreign attempt
    out = ensure_synthetic(tmp_path, spec, verbose=False)
    assert (out / "manifest.json").is_file() and len(list((out / "train" / "im").iterdir())) == 3


def test_cli_synthetic(tmp_path, capsys):
    rc = data_main(["synthetic", "--root", str(tmp_path), "--size", "48", "--n-train", "2",
                    "--n-val", "1"])
    assert rc == 0 and "sod-s0-48x48-2-1" in capsys.readouterr().out


def _max_f(probs: list[np.ndarray], gts: list[np.ndarray]) -> float:
    """Max F (beta^2 = 0.3) from mean precision/recall over 256 thresholds (U2-Net convention)."""
    ps, rs = [], []
    for p, g in zip(probs, gts):
        q = np.clip(np.rint(p * 255), 0, 255).astype(np.int64)
        pos = g > 0.5
        hp = np.bincount(q[pos], minlength=256)[::-1].cumsum()
        hn = np.bincount(q[~pos], minlength=256)[::-1].cumsum()
        tp, fp = hp, hn
        ps.append(tp / np.maximum(tp + fp, 1e-8))
        rs.append(tp / max(pos.sum(), 1e-8))
    p, r = np.mean(ps, 0), np.mean(rs, 0)
    return float(np.max(1.3 * p * r / np.maximum(0.3 * p + r, 1e-8)))


@pytest.mark.slow
def test_u2netp_learns_synthetic_in_cpu_minutes(tmp_path):
    """Untrained U2-NetP scores poorly (0.28); 120 steps of batch 8 at 128/112 px (about
    400 CPU-seconds, 3-4 minutes on 2 cores) reach max-F >= 0.90 (measured: 0.81 after 30
    steps, 0.88 after 60, 0.90 after 90, 0.93 after 120).  ``SALSEG_LEARN_STEPS`` overrides."""
    import torch.nn.functional as F

    from salseg.data.datamodule import SegDataModule
    from salseg.models import create_model, prediction_logits

    max_steps = int(os.environ.get("SALSEG_LEARN_STEPS", "120"))
    torch.manual_seed(0)
    dm = SegDataModule(name="synthetic", root=str(tmp_path),
                       train=[{"kind": "synthetic", "split": "train"}],
                       val=[{"kind": "synthetic", "split": "val"}],
                       aug={"name": "u2net_paper", "size": 128, "crop": 112}, batch_size=8,
                       verbose=False)
    dm.setup("fit")
    model = create_model("u2netp")

    def evaluate() -> float:
        model.eval()
        probs, gts = [], []
        with torch.no_grad():
            for b in dm.val_dataloader():
                logit = prediction_logits("u2netp", model(b["image"]))
                for lg, gt in zip(logit, b["gt"]):
                    up = F.interpolate(lg[None], size=gt.shape[-2:], mode="bilinear",
                                       align_corners=False)
                    probs.append(torch.sigmoid(up)[0, 0].numpy())
                    gts.append(gt[0].numpy())
        model.train()
        return _max_f(probs, gts)

    untrained = evaluate()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    steps = 0
    while steps < max_steps:
        for b in dm.train_dataloader():
            outs = model(b["image"])
            loss = sum(F.binary_cross_entropy_with_logits(o, b["mask"]) for o in outs)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if steps >= max_steps:
                break
    trained = evaluate()
    print(f"untrained max-F {untrained:.3f}, trained max-F {trained:.3f} after {steps} steps "
          f"({time.perf_counter() - t0:.0f}s)")
    assert untrained < 0.6
    assert trained >= 0.90
