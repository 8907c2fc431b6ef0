"""IS-Net speed levers of issue 24 (``model.fused_loss``, ``model.sync_dtype``): they compute the
same loss as the default path (up to float rounding), run a real training step on the CPU, and
``benchmarks/bench_train.py`` drives their rows (and the paired windows) end to end."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from train_helpers import compose_train

from salseg.losses import DeepSupervisionBCE
from salseg.models import create_model
from salseg.training import task_config

ROOT = Path(__file__).resolve().parents[1]


def test_fused_bce_terms_equal_separate_terms():
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, 1, 24, 24, generator=g) * 4 for _ in range(6)]
    target = torch.rand(2, 1, 24, 24, generator=g)
    weights = [1, 0.5, 1, 2, 1, 1]
    total, terms = DeepSupervisionBCE(weights=weights)(maps, target)
    f_total, f_terms = DeepSupervisionBCE(weights=weights, fused=True)(maps, target)
    torch.testing.assert_close(torch.stack(f_terms), torch.stack(terms), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f_total, total, rtol=1e-5, atol=1e-6)
    # gradients reach every map alike
    for m in maps:
        m.requires_grad_(True)
    ga = torch.autograd.grad(DeepSupervisionBCE(weights=weights)(maps, target)[0], maps)
    gb = torch.autograd.grad(DeepSupervisionBCE(weights=weights, fused=True)(maps, target)[0], maps)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="loss_form=logits"):
        DeepSupervisionBCE(form="official", fused=True)


def isnet_task(tmp_path, *overrides: str):
    torch.manual_seed(1)
    enc_path = tmp_path / "enc.pth"
    if not enc_path.exists():
        torch.save(create_model("isnet_gt_encoder").state_dict(), enc_path)
    cfg = compose_train(["model=isnet", f"model.gt_encoder_ckpt={enc_path}", *overrides], tmp_path)
    task = instantiate(task_config(cfg.model))
    return task


def test_levers_give_the_default_loss(tmp_path):
    torch.manual_seed(0)
    base = isnet_task(tmp_path)
    fast = isnet_task(tmp_path, "model.fused_loss=true", "model.sync_dtype=bfloat16")
    fast.model.load_state_dict(base.model.state_dict())
    fast.gt_encoder.load_state_dict(base.gt_encoder.state_dict())
    base.eval(), fast.eval()  # same BatchNorm statistics in both forward passes
    batch = {"image": torch.rand(2, 3, 64, 64), "mask": (torch.rand(2, 1, 64, 64) > 0.5).float()}
    with torch.no_grad():
        loss, terms = base.compute_loss(batch, base(batch["image"]))
        f_loss, f_terms = fast.compute_loss(batch, fast(batch["image"]))
    assert f_loss.dtype == torch.float32
    torch.testing.assert_close(f_terms["bce_side1"], terms["bce_side1"], rtol=1e-5, atol=1e-6)
    # bf16 features: 8 bits of mantissa
    torch.testing.assert_close(f_terms["loss_sync"], terms["loss_sync"], rtol=2e-2, atol=1e-4)
    torch.testing.assert_close(f_loss, loss, rtol=2e-2, atol=1e-4)


def test_bad_sync_dtype_is_refused(tmp_path):
    with pytest.raises(Exception, match="sync_dtype must be one of"):  # hydra wraps it
        isnet_task(tmp_path, "model.sync_dtype=float16")


@pytest.mark.slow
def test_bench_train_runs_the_lever_rows_in_paired_windows(tmp_path):
    """The rows of the levers (bf16-mixed on the CPU) against the official loop, through the
    benchmark as ``gpu_figures.sh`` runs it, at a tiny size: every row reports a paired ratio
    with an interval and a mark, and the JSON lines hold their windows."""
    jsonl = tmp_path / "train.jsonl"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--device", "cpu",
         "--models", "isnet", "--rows", "official,bf16-fusedloss,bf16-syncbf16", "--size", "64",
         "--batch", "2", "--steps", "1", "--repeats", "2", "--row-timeout", "300",
         "--jsonl", str(jsonl)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "failed" not in proc.stdout, proc.stdout[-3000:]
    ratio = [ln for ln in proc.stdout.splitlines() if ln.startswith("RATIO ")]
    assert len(ratio) == 1 and ratio[0].split()[1] == "train_vs_official_isnet", proc.stdout[-2000:]
    assert ratio[0].split()[5].startswith("unstable(")  # 2 pairs cannot give an interval
    rows = [json.loads(ln) for ln in jsonl.read_text().splitlines()]
    assert [r["key"] for r in rows] == ["bf16-fusedloss", "bf16-syncbf16"]
    for r in rows:
        assert len(r["windows"]) == len(r["reference_windows"]) == 2
        # a window's work is the images it trained on (the rates are images/s): 1 step of 2
        assert all(w["work"] == 2 and w["wall"] > 0 for w in r["windows"] + r["reference_windows"])
        assert r["ratio"]["pairs"] == 2


def test_gpu_figures_script_names_known_rows_and_fits_its_budget():
    """``benchmarks/gpu_figures.sh`` is one call on a lent GPU: its syntax holds, every
    ``bench_train.py`` row it names exists, and it stops itself within 9 minutes."""
    import re

    script = ROOT / "benchmarks" / "gpu_figures.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_train import ROWS
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    lists = dict(re.findall(r"^(ISNET_EAGER|U2NET|ISNET_COMPILED)=(\S+)$", text, re.M))
    assert set(lists) == {"ISNET_EAGER", "U2NET", "ISNET_COMPILED"}
    for keys in lists.values():
        assert keys.split(",")[0] == "official"
        assert set(keys.split(",")) <= set(ROWS), keys
    levers = {k for keys in lists.values() for k in keys.split(",") for lever in
              ("fused_loss", "sync_dtype", "compile") if ROWS[k].get(lever)}
    assert {ROWS[k]["compile"] for k in levers if ROWS[k].get("compile")} == {True, "reduce-overhead"}
    assert any(ROWS[k].get("fused_loss") for k in levers)
    assert any(ROWS[k].get("sync_dtype") == "bfloat16" for k in levers)
    assert int(re.search(r"^BUDGET=\$\{BUDGET:-(\d+)\}$", text, re.M).group(1)) <= 540
    assert "tests/test_cuda.py" in text and "--models u2net " in text
