"""Prediction throughput: ``salseg-predict``'s pipeline vs rembg on the same images and model.

For U2-Net at 320x320 and IS-Net at 1024x1024 (random weights: speed does not depend on
them), on the CPU:

* ``salseg torch``: :func:`salseg.predict.batch.predict_files` with the PyTorch back-end;
* ``salseg onnx``: the same with ``--backend onnx`` on an ONNX file exported here
  (``export_onnx(..., rembg=True)``);
* ``rembg``: ``rembg.remove(image, session=new_session("u2net_custom" | "dis_custom",
  model_path=<that same file>), only_mask=True)``, saved as PNG.

Every row decodes the JPEG files, predicts, resizes the mask to the original size and writes a
PNG, one image at a time (batch 1, no decoding workers), after one warm-up image.  A CUDA row
is added when a GPU is present.  Prints ``RATIO predict_vs_rembg_<model> x`` = best salseg CPU
back-end images/s divided by rembg images/s.  rembg comes from the optional extra ``bench``
(``pip install -e '.[bench]'``); without it the rembg rows are skipped and no ratio is printed.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salseg.data.synthetic import SyntheticSpec, render_pair  # noqa: E402
from salseg.export.onnx import export_onnx  # noqa: E402
from salseg.models import create_model, get_card  # noqa: E402
from salseg.predict.batch import SaveOptions, predict_files  # noqa: E402
from salseg.predict.inputs import InputItem  # noqa: E402
from salseg.predict.predictor import Predictor  # noqa: E402


def make_images(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    spec = SyntheticSpec(size=size)
    paths = []
    for i in range(count):
        image, _ = render_pair(spec, "val", i)
        path = folder / f"img{i:03d}.jpg"
        Image.fromarray(image).save(path, quality=92)
        paths.append(path)
    return paths


def time_salseg(predictor: Predictor, images: list[Path], out: Path) -> float:
    items = [InputItem(p, p.stem) for p in images]
    predict_files(predictor, items[:1], out / "warmup", SaveOptions(), progress=False)
    start = time.perf_counter()
    summary = predict_files(predictor, items, out, SaveOptions(overwrite=True), progress=False)
    elapsed = time.perf_counter() - start
    assert summary.ok and summary.written == len(images), summary.report()
    return len(images) / elapsed


def time_rembg(onnx_path: Path, model: str, images: list[Path], out: Path) -> float | None:
    try:
        from rembg import new_session, remove
    except ImportError:
        return None
    session = new_session(get_card(model).rembg_session, model_path=str(onnx_path))
    out.mkdir(parents=True, exist_ok=True)

    def one(path: Path) -> None:
        with Image.open(path) as img:
            mask = remove(img, session=session, only_mask=True)
        mask.save(out / f"{path.stem}.png")

    one(images[0])
    start = time.perf_counter()
    for path in images:
        one(path)
    return len(images) / (time.perf_counter() - start)


def bench_model(model: str, count: int, size: tuple[int, int], work: Path, quick: bool
                ) -> list[tuple[str, float | None]]:
    images = make_images(work / f"{model}_images", count, size)
    torch.manual_seed(0)
    net = create_model(model).eval()
    onnx_path = work / f"{model}.onnx"
    export_onnx(net, onnx_path, model, rembg=True, trace_size=64 if quick else 320,
                check_sizes=[(64, 64)] if quick else None)
    rows: list[tuple[str, float | None]] = []
    cpu = Predictor(net, model=model, device="cpu")
    rows.append(("salseg torch cpu", time_salseg(cpu, images, work / f"{model}_torch")))
    ort = Predictor(onnx_path, model=model, backend="onnx", device="cpu")
    rows.append(("salseg onnx cpu", time_salseg(ort, images, work / f"{model}_onnx")))
    rows.append(("rembg onnx cpu", time_rembg(onnx_path, model, images, work / f"{model}_rembg")))
    if torch.cuda.is_available():
        for precision in ("fp32", "bf16"):
            gpu = Predictor(net, model=model, device="cuda", precision=precision)
            rows.append((f"salseg torch cuda {precision}",
                         time_salseg(gpu, images, work / f"{model}_cuda_{precision}")))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few images (about a minute)")
    parser.add_argument("--models", default="u2net,isnet")
    args = parser.parse_args()
    counts = {"u2net": 2, "isnet": 1} if args.quick else {"u2net": 24, "isnet": 6}
    size = (480, 640)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; images {size[1]}x{size[0]} JPEG")
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            rows = bench_model(model, counts[model], size, Path(tmp), args.quick)
            print(f"\n{model} ({counts[model]} images, input "
                  f"{'320x320' if model == 'u2net' else '1024x1024'})")
            print(f"{'pipeline':<26} {'images/s':>9}")
            for name, value in rows:
                print(f"{name:<26} {'n/a' if value is None else f'{value:9.3f}':>9}")
            values = dict(rows)
            rembg = values.get("rembg onnx cpu")
            if rembg:
                best = max(values["salseg torch cpu"], values["salseg onnx cpu"])
                ratios[model] = best / rembg
    print()
    if not ratios:
        print("rembg is not installed (pip install -e '.[bench]'): no ratio")
    for model, ratio in ratios.items():
        print(f"RATIO predict_vs_rembg_{model} {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
