"""``make demo``: the main job, end to end on the embedded synthetic data, on the CPU.

1. generates the synthetic salient-object set (``data/synthetic/``) on first use;
2. trains U2-NetP (``python train.py experiment=demo``) into ``outputs/demo/train``;
3. evaluates the checkpoint the run reports (``reported_checkpoint`` in its summary: the best
   by ``val/maxF`` on the synthetic validation set) and, for comparison, the same network untrained
   (``python eval.py``) into ``outputs/demo/eval`` and ``outputs/demo/eval_untrained``;
4. writes masks, RGBA cut-outs and previews of a few validation images
   (``salseg-predict``) into ``outputs/demo/predictions``;
5. prints where everything is and the final metrics, and fails if the trained model does not
   reach max-F >= 0.90 on the synthetic validation set.

An earlier ``outputs/demo`` is moved aside (``outputs/demo.<time>``), never deleted, and the demo
says so: training refuses a run directory that already holds a run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# SALSEG_DEMO_TINY=1: the same steps on tiny settings, without the quality bar (the README's
# top-to-bottom test, tests/test_docs_commands.py)
TINY = os.environ.get("SALSEG_DEMO_TINY", "") not in ("", "0")
TINY_TRAIN = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
              "aug.size=64", "aug.crop=null", "trainer.enable_progress_bar=false"]
OUT = ROOT / "outputs" / "demo"
BAR = 0.90


ACTIVATE = "source .venv/bin/activate"


def rel(path: str | Path) -> str:
    """``path`` relative to the repository (the demo's hints are typed there)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def run(cmd: list[str]) -> None:
    print("\n$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def main() -> int:
    py = sys.executable
    if OUT.exists():
        aside = OUT.with_name(f"demo.{time.strftime('%Y%m%d-%H%M%S')}")
        OUT.rename(aside)
        print(f"moved the previous demo outputs to {aside} (a new run needs an empty folder)")
    start = time.time()
    run([py, "train.py", "experiment=demo", *(TINY_TRAIN if TINY else [])])
    summary = json.loads((OUT / "train" / "train_summary.json").read_text())
    ckpt = summary["reported_checkpoint"]
    run([py, "eval.py", f"ckpt={ckpt}", "data=synthetic", "task_name=demo", "run_name=eval",
         f"hydra.run.dir={OUT / 'eval'}"])
    run([py, "eval.py", "model=u2netp", "random_weights=true", "input_size=[128,128]",
         "data=synthetic", "task_name=demo", "run_name=eval_untrained", "plots=false",
         f"hydra.run.dir={OUT / 'eval_untrained'}"])
    val_images = sorted((ROOT / "data" / "synthetic").glob("sod-*/val/im/*.jpg"))[:6]
    run([py, "-m", "salseg.cli.predict", *map(str, val_images), "-o", str(OUT / "predictions"),
         "--weights", ckpt, "--save", "mask,cutout,preview", "--device", "cpu"])

    trained = json.loads((OUT / "eval" / "metrics.json").read_text())
    untrained = json.loads((OUT / "eval_untrained" / "metrics.json").read_text())
    scores = next(iter(trained.values()))  # metrics.json: dataset -> metric -> value
    base = next(iter(untrained.values()))
    print("\n" + "=" * 72)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"salseg demo finished in {time.time() - start:.0f} s "
          f"({os.cpu_count()} CPU cores, load average {load:.1f})")
    print(f"  checkpoint      {rel(ckpt)}")
    print(f"  TensorBoard     tensorboard --logdir {rel(OUT / 'train' / 'tensorboard')}")
    print(f"  evaluation      {rel(OUT / 'eval')} (metrics.json, results.md, pr_curve.png, f_curve.png)")
    print(f"  predictions     {rel(OUT / 'predictions')} (masks, cutout/, preview/)")
    print(f"\n  {'synthetic val':<16}{'maxF':>8}{'MAE':>8}{'S':>8}{'wF':>8}")
    for label, s in (("trained", scores), ("untrained", base)):
        print(f"  {label:<16}{s['max_f']:>8.3f}{s['mae']:>8.3f}{s['sm']:>8.3f}{s['wf']:>8.3f}")
    if TINY:
        print("\nSALSEG_DEMO_TINY: tiny settings, no quality bar")
    elif scores["max_f"] < BAR:
        print(f"\nFAILED: max-F {scores['max_f']:.3f} < {BAR}", file=sys.stderr)
        return 1
    print(f"\nOK: max-F {scores['max_f']:.3f} >= {BAR} (untrained: {base['max_f']:.3f})")
    print(f"\nNext, in this folder: {ACTIVATE}   (puts python, salseg-* and tensorboard on PATH;\n"
          "once per new shell), then e.g. salseg-predict --help")
    return 0


def cli() -> int:
    try:
        return main()
    except subprocess.CalledProcessError as err:  # the step printed its own error above
        from salseg.cli.errors import report

        return report("salseg-demo", f"step failed with exit code {err.returncode}",
                      " ".join(map(str, err.cmd)), code=err.returncode or 1)


if __name__ == "__main__":
    sys.exit(cli())
