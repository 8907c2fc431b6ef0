"""Prediction throughput: ``salseg-predict``'s pipeline with both back-ends vs rembg.

For U2-NetP and U2-Net at 320x320 and IS-Net at 1024x1024 (random weights: speed does not
depend on them), on the CPU:

* ``salseg torch``: :func:`salseg.predict.batch.predict_files` with the PyTorch back-end
  (BatchNorm folded at load, ``channels_last``);
* ``salseg onnx``: the same with ``--backend onnx`` on an ONNX file exported here
  (``export_onnx(..., rembg=True)``);
* ``rembg``: ``rembg.remove(image, session=new_session("u2net_custom" | "dis_custom",
  model_path=<that same file>), only_mask=True)``, saved as PNG.

Every row decodes the JPEG files, predicts, resizes the mask to the original size and writes a
PNG, one image at a time (batch 1, no decoding workers), after one warm-up image.  The rows take
turns (A B C A B C ...) for several repeats, so a change of load on the machine hits all of them
alike; each row reports the **median** images/s and the spread ``(max - min) / median`` of its
repeats, and ratios are ratios of medians.  A CUDA row is added when a GPU is present.

``--quick`` (the default of ``make bench``): fewer images per repeat, and IS-Net at 512x512
(rembg's IS-Net session is fixed at 1024, so its rembg row is only run without ``--quick``).
Prints ``RATIO predict_torch_vs_onnxruntime_<model> x`` (torch images/s / onnxruntime
images/s) and ``RATIO predict_vs_rembg_<model> x`` = best salseg CPU back-end / rembg.

Data-parallel prediction (``salseg-predict --num-processes``): the first model's images are
predicted by :func:`salseg.predict.parallel.predict_files_parallel` with 1 process (all CPU
threads) and with ``--processes`` processes (``cpu_count // N`` threads each), the whole call
timed, process start and model load included, in turns; prints
``RATIO predict_<N>proc_vs_1proc_<model> x``.  rembg
comes from the optional extra ``bench`` (``pip install -e '.[bench]'``); without it the rembg
rows are skipped.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import Stats, interleaved  # noqa: E402

from salseg.data.synthetic import SyntheticSpec, render_pair  # noqa: E402
from salseg.export.onnx import export_onnx  # noqa: E402
from salseg.models import create_model, get_card  # noqa: E402
from salseg.predict.batch import SaveOptions, predict_files  # noqa: E402
from salseg.predict.inputs import InputItem  # noqa: E402
from salseg.predict.predictor import Predictor  # noqa: E402

REMBG_SESSION = {"u2net": "u2net_custom", "u2netp": "u2net_custom", "isnet": "dis_custom"}
FULL_SIZE = {"u2net": 320, "u2netp": 320, "isnet": 1024}  # the official inference sizes


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


def salseg_run(predictor: Predictor, images: list[Path], out: Path):
    """A callable predicting ``images`` into ``out`` (overwriting); returns the image count."""
    items = [InputItem(p, p.stem) for p in images]

    def run() -> float:
        summary = predict_files(predictor, items, out, SaveOptions(overwrite=True),
                                progress=False)
        assert summary.ok and summary.written == len(images), summary.report()
        return len(images)

    return run


def rembg_run(onnx_path: Path, model: str, images: list[Path], out: Path):
    try:
        from rembg import new_session, remove
    except ImportError:
        return None
    session = new_session(get_card(model).rembg_session, model_path=str(onnx_path))
    out.mkdir(parents=True, exist_ok=True)

    def run() -> float:
        for path in images:
            with Image.open(path) as img:
                mask = remove(img, session=session, only_mask=True)
            mask.save(out / f"{path.stem}.png")
        return len(images)

    return run


def bench_model(model: str, count: int, size: tuple[int, int], input_size: int, repeats: int,
                work: Path, with_rembg: bool) -> dict[str, Stats]:
    images = make_images(work / f"{model}_images", count, size)
    torch.manual_seed(0)
    net = create_model(model).eval()
    onnx_path = work / f"{model}.onnx"
    export_onnx(net, onnx_path, model, rembg=True, trace_size=input_size,
                check_sizes=[(64, 64)])
    runs = {}
    cpu = Predictor(net, model=model, device="cpu", input_size=input_size)
    runs["salseg torch cpu"] = salseg_run(cpu, images, work / f"{model}_torch")
    ort = Predictor(onnx_path, model=model, backend="onnx", device="cpu", input_size=input_size)
    runs["salseg onnx cpu"] = salseg_run(ort, images, work / f"{model}_onnx")
    if with_rembg:
        rembg = rembg_run(onnx_path, model, images, work / f"{model}_rembg")
        if rembg is not None:
            runs["rembg onnx cpu"] = rembg
    results = interleaved(runs, repeats=repeats, warmup=1)
    if torch.cuda.is_available():
        gpu_runs = {}
        for precision in ("fp32", "bf16"):
            gpu = Predictor(net, model=model, device="cuda", precision=precision,
                            input_size=input_size)
            gpu_runs[f"salseg torch cuda {precision}"] = salseg_run(
                gpu, images, work / f"{model}_cuda_{precision}")
        results.update(interleaved(gpu_runs, repeats=repeats, warmup=1))
    return results


def bench_processes(model: str, count: int, size: tuple[int, int], input_size: int,
                    processes: int, repeats: int, work: Path) -> dict[str, Stats]:
    """Images/s of whole ``predict_files_parallel`` calls with 1 and ``processes`` processes."""
    from salseg.predict.parallel import predict_files_parallel

    images = make_images(work / f"{model}_par_images", count, size)
    items = [InputItem(p, p.stem) for p in images]
    kwargs = {"weights": None, "model": model, "device": "cpu", "input_size": input_size}

    def call(n: int):
        def run() -> float:
            summary = predict_files_parallel(kwargs, items, work / f"{model}_par{n}",
                                             SaveOptions(overwrite=True), num_processes=n,
                                             progress=False)
            assert summary.ok and summary.written == len(items), summary.report()
            return len(items)
        return run

    return interleaved({"1 process": call(1), f"{processes} processes": call(processes)},
                       repeats=repeats, warmup=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images, IS-Net at 512")
    parser.add_argument("--models", default="u2netp,u2net,isnet")
    parser.add_argument("--repeats", type=int, default=None,
                        help="measurements per row (default 3 quick, 5 full)")
    parser.add_argument("--processes", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes of the data-parallel row (default 2; 1 skips it)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    counts = ({"u2netp": 4, "u2net": 2, "isnet": 1} if args.quick
              else {"u2netp": 16, "u2net": 8, "isnet": 3})
    size = (480, 640)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; images {size[1]}x{size[0]} JPEG; {repeats} repeats per row, "
          "rows in turns")
    torch_vs_ort, vs_rembg = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            input_size = FULL_SIZE[model]
            if args.quick and input_size > 512:
                input_size = 512
            with_rembg = input_size == FULL_SIZE[model]  # rembg's sessions have fixed sizes
            rows = bench_model(model, counts[model], size, input_size, repeats, Path(tmp),
                               with_rembg)
            note = " (reduced by --quick; full: 1024, with rembg)" if not with_rembg else ""
            print(f"\n{model} ({counts[model]} images per repeat, input "
                  f"{input_size}x{input_size}{note})")
            print(f"{'pipeline':<26} {'images/s':>9} {'spread':>7}")
            for name, st in rows.items():
                print(f"{name:<26} {st.median:9.3f} {100 * st.spread:6.0f}%")
            t, o = rows["salseg torch cpu"].median, rows["salseg onnx cpu"].median
            torch_vs_ort[model] = t / o
            if "rembg onnx cpu" in rows:
                vs_rembg[model] = max(t, o) / rows["rembg onnx cpu"].median
        if args.processes > 1:
            model = args.models.split(",")[0]
            count = 12 if args.quick else 48
            par = bench_processes(model, count, size, FULL_SIZE[model] if FULL_SIZE[model] <= 512
                                  else 512, args.processes, max(2, repeats - 2), Path(tmp))
            print(f"\n{model}, data-parallel prediction ({count} images per call, process start "
                  "and model load included)")
            for name, st in par.items():
                print(f"{name:<26} {st.median:9.3f} {100 * st.spread:6.0f}%")
            one, many = par["1 process"].median, par[f"{args.processes} processes"].median
            parallel_ratio = (model, many / one)
    print()
    if args.processes > 1:
        print(f"RATIO predict_{args.processes}proc_vs_1proc_{parallel_ratio[0]} "
              f"{parallel_ratio[1]:.3f}")
    if not vs_rembg:
        print("rembg is not installed (pip install -e '.[bench]') or not run: no rembg ratio")
    for model, ratio in torch_vs_ort.items():
        print(f"RATIO predict_torch_vs_onnxruntime_{model} {ratio:.3f}")
    for model, ratio in vs_rembg.items():
        print(f"RATIO predict_vs_rembg_{model} {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
