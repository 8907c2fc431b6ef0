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
PNG, one image at a time (batch 1, no decoding workers), after one warm-up image.  The rows
(in this process) take turns in windows of a few images, the order alternating, so a change of
load on the machine hits all of them alike; each row reports the **median** images/s of its
windows, and a ratio is the median of the paired per-window ratios with a 95 % bootstrap
interval, marked ``unstable`` when wide or when the process got less CPU than its threads asked
for (``timing.paired_ratio``).  A CUDA row is added when a GPU is present.

``--quick`` (the default of ``make bench``): fewer images per repeat, and IS-Net at 512x512
(rembg's IS-Net session is fixed at 1024, so its rembg row is only run without ``--quick``).
Prints ``RATIO predict_torch_vs_onnxruntime_<model> x low high mark`` (torch / onnxruntime)
and ``RATIO predict_vs_rembg_<model> ...`` = best salseg CPU back-end / rembg.

BiRefNet_lite (``birefnet_lite``): ``salseg torch cpu`` against a minimal reimplementation of
the official ``inference.py`` written here (``cv2.imread``, ``cv2.resize`` INTER_LINEAR to the
input size, BGR -> RGB, ``ToTensor`` + ImageNet ``Normalize``, ``model(x)[-1].sigmoid()``,
``F.interpolate(..., align_corners=True)`` to the original size, ``ToPILImage`` -> PNG), the
same network; 1024x1024 (``--quick``: 256).  Prints ``RATIO predict_vs_official_birefnet_lite``.

Data-parallel prediction (``salseg-predict --num-processes``): the first model's images are
predicted by :func:`salseg.predict.parallel.predict_files_parallel` with 1 process (all CPU
threads) and with ``--processes`` processes (``cpu_count // N`` threads each), one whole call per window,
process start and model load included, in turns; prints
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

from timing import Ratio, Window, interleave, load_average, local, paired_ratio  # noqa: E402

from salseg.data.synthetic import SyntheticSpec, render_pair  # noqa: E402
from salseg.export.onnx import export_onnx  # noqa: E402
from salseg.models import create_model, get_card  # noqa: E402
from salseg.predict.batch import SaveOptions, predict_files  # noqa: E402
from salseg.predict.inputs import InputItem  # noqa: E402
from salseg.predict.predictor import Predictor  # noqa: E402

REMBG_SESSION = {"u2net": "u2net_custom", "u2netp": "u2net_custom", "isnet": "dis_custom"}
FULL_SIZE = {"u2net": 320, "u2netp": 320, "isnet": 1024,
             "birefnet_lite": 1024}  # the official inference sizes
OFFICIAL_ROWS = ("birefnet_lite",)  # compared with the official inference written here, not rembg


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
    """A callable predicting the next of ``images`` (in a cycle) into ``out`` (overwriting);
    returns 1 (image)."""
    items = [InputItem(p, p.stem) for p in images]
    state = {"i": 0}

    def run() -> float:
        item = items[state["i"] % len(items)]
        state["i"] += 1
        summary = predict_files(predictor, [item], out, SaveOptions(overwrite=True),
                                progress=False)
        assert summary.ok and summary.written == 1, summary.report()
        return 1

    return run


def rembg_run(onnx_path: Path, model: str, images: list[Path], out: Path):
    try:
        from rembg import new_session, remove
    except ImportError:
        return None
    session = new_session(get_card(model).rembg_session, model_path=str(onnx_path))
    out.mkdir(parents=True, exist_ok=True)
    state = {"i": 0}

    def run() -> float:
        path = images[state["i"] % len(images)]
        state["i"] += 1
        with Image.open(path) as img:
            mask = remove(img, session=session, only_mask=True)
        mask.save(out / f"{path.stem}.png")
        return 1

    return run


Windows = dict[str, list[Window]]


def official_birefnet_run(net: torch.nn.Module, images: list[Path], size: int, out: Path):
    """BiRefNet ``inference.py`` (repository pipeline), written after the official code."""
    import cv2
    import torch.nn.functional as F
    from torchvision import transforms

    to_input = transforms.Compose([transforms.ToTensor(), transforms.Normalize(
        [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    out.mkdir(parents=True, exist_ok=True)
    state = {"i": 0}

    def run() -> float:
        path = images[state["i"] % len(images)]
        state["i"] += 1
        bgr = cv2.imread(str(path))
        h0, w0 = bgr.shape[:2]
        rgb = cv2.cvtColor(cv2.resize(bgr, (size, size), interpolation=cv2.INTER_LINEAR),
                           cv2.COLOR_BGR2RGB)
        x = to_input(Image.fromarray(rgb))[None]
        with torch.no_grad():
            pred = net(x)[-1].sigmoid()
        pred = F.interpolate(pred, size=(h0, w0), mode="bilinear", align_corners=True)
        transforms.ToPILImage()(pred[0]).save(out / f"{path.stem}.png")
        return 1

    return run


def bench_official(model: str, count: int, size: tuple[int, int], input_size: int,
                   windows: int, work: Path) -> Windows:
    """Windows of ``count`` images: salseg's torch back-end and the official inference."""
    images = make_images(work / f"{model}_images", count, size)
    torch.manual_seed(0)
    net = create_model(model).eval()
    threads = torch.get_num_threads()
    runs = {"official inference": local(official_birefnet_run(
        net, images, input_size, work / f"{model}_official"), threads)}
    cpu = Predictor(net, model=model, device="cpu", input_size=input_size, backend="torch")
    runs["salseg torch cpu"] = local(salseg_run(cpu, images, work / f"{model}_torch"), threads)
    return interleave(runs, windows=windows, steps=count, warmup=1)


def bench_model(model: str, count: int, size: tuple[int, int], input_size: int, windows: int,
                work: Path, with_rembg: bool) -> Windows:
    """Windows of ``count`` images of every back-end, in turns."""
    images = make_images(work / f"{model}_images", count, size)
    torch.manual_seed(0)
    net = create_model(model).eval()
    onnx_path = work / f"{model}.onnx"
    export_onnx(net, onnx_path, model, rembg=True, trace_size=input_size,
                check_sizes=[(64, 64)])
    threads = torch.get_num_threads()
    runs = {}
    cpu = Predictor(net, model=model, device="cpu", input_size=input_size)
    runs["salseg torch cpu"] = local(salseg_run(cpu, images, work / f"{model}_torch"), threads)
    ort = Predictor(onnx_path, model=model, backend="onnx", device="cpu", input_size=input_size)
    runs["salseg onnx cpu"] = local(salseg_run(ort, images, work / f"{model}_onnx"), threads)
    if with_rembg:
        rembg = rembg_run(onnx_path, model, images, work / f"{model}_rembg")
        if rembg is not None:
            runs["rembg onnx cpu"] = local(rembg, threads)
    results = interleave(runs, windows=windows, steps=count, warmup=1)
    if torch.cuda.is_available():
        gpu_runs = {}
        for precision in ("fp32", "bf16"):
            gpu = Predictor(net, model=model, device="cuda", precision=precision,
                            input_size=input_size)
            gpu_runs[f"salseg torch cuda {precision}"] = local(salseg_run(
                gpu, images, work / f"{model}_cuda_{precision}"), threads)
        results.update(interleave(gpu_runs, windows=windows, steps=count, warmup=1))
    return results


def bench_processes(model: str, count: int, size: tuple[int, int], input_size: int,
                    processes: int, windows: int, work: Path) -> Windows:
    """Windows of one whole ``predict_files_parallel`` call each with 1 and ``processes``
    processes, in turns (the CPU time of the ended child processes is counted)."""
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
        return local(run, torch.get_num_threads(), children=True)

    return interleave({"1 process": call(1), f"{processes} processes": call(processes)},
                      windows=windows, steps=1, warmup=0)


def table(rows: Windows, ref: str) -> None:
    print(f"{'pipeline':<26} {'images/s':>9} {'vs ' + ref:>22} {'[95% interval]':<17} {'cpu':>5}")
    for name, ws in rows.items():
        rate = sorted(w.rate for w in ws)[len(ws) // 2]
        share = sorted(w.cpu_share for w in ws)[len(ws) // 2]
        if name == ref:
            vs = f"{'-':>22} {'':17}"
        else:
            r = paired_ratio(ws, rows[ref])
            vs = f"{r.value:22.3f} [{r.low:.3f}, {r.high:.3f}]"
        print(f"{name:<26} {rate:9.3f} {vs} {share:5.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images, IS-Net at 512")
    parser.add_argument("--models", default="u2netp,u2net,isnet,birefnet_lite")
    parser.add_argument("--repeats", type=int, default=None,
                        help="paired windows per row (default 6 quick, 8 full)")
    parser.add_argument("--processes", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes of the data-parallel row (default 2; 1 skips it)")
    args = parser.parse_args()
    windows = args.repeats or (6 if args.quick else 8)
    counts = ({"u2netp": 2, "u2net": 1, "isnet": 1, "birefnet_lite": 1} if args.quick
              else {"u2netp": 8, "u2net": 4, "isnet": 2, "birefnet_lite": 2})
    size = (480, 640)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; images {size[1]}x{size[0]} JPEG; {windows} windows per row, "
          f"rows in turns; load average {load_average():.2f}")
    ratios: dict[str, Ratio] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            if model in OFFICIAL_ROWS:
                input_size = 256 if args.quick else FULL_SIZE[model]
                rows = bench_official(model, counts[model], size, input_size, windows, Path(tmp))
                note = " (reduced by --quick; full: 1024)" if args.quick else ""
                print(f"\n{model} ({counts[model]} images per window, input "
                      f"{input_size}x{input_size}{note})")
                table(rows, "official inference")
                ratios[f"predict_vs_official_{model}"] = paired_ratio(
                    rows["salseg torch cpu"], rows["official inference"])
                continue
            input_size = FULL_SIZE[model]
            if args.quick and input_size > 512:
                input_size = 512
            with_rembg = input_size == FULL_SIZE[model]  # rembg's sessions have fixed sizes
            rows = bench_model(model, counts[model], size, input_size, windows, Path(tmp),
                               with_rembg)
            note = " (reduced by --quick; full: 1024, with rembg)" if not with_rembg else ""
            print(f"\n{model} ({counts[model]} images per window, input "
                  f"{input_size}x{input_size}{note})")
            table(rows, "salseg onnx cpu")
            ratios[f"predict_torch_vs_onnxruntime_{model}"] = paired_ratio(
                rows["salseg torch cpu"], rows["salseg onnx cpu"])
            if "rembg onnx cpu" in rows:
                best = max(("salseg torch cpu", "salseg onnx cpu"),
                           key=lambda k: paired_ratio(rows[k], rows["rembg onnx cpu"]).value)
                ratios[f"predict_vs_rembg_{model}"] = paired_ratio(rows[best],
                                                                   rows["rembg onnx cpu"])
        if args.processes > 1:
            model = args.models.split(",")[0]
            count = 8 if args.quick else 32
            par = bench_processes(model, count, size, FULL_SIZE[model] if FULL_SIZE[model] <= 512
                                  else 512, args.processes, max(4, windows - 2), Path(tmp))
            print(f"\n{model}, data-parallel prediction ({count} images per call, process start "
                  "and model load included; cpu counts the ended child processes)")
            table(par, "1 process")
            ratios[f"predict_{args.processes}proc_vs_1proc_{model}"] = paired_ratio(
                par[f"{args.processes} processes"], par["1 process"])
    print("\nimages/s: median over the windows; 'vs': median of the paired per-window ratios "
          "with its 95 % bootstrap interval; cpu: median share of the CPU asked for (torch "
          "threads) that the process got")
    if not any(k.startswith("predict_vs_rembg") for k in ratios):
        print("rembg is not installed (pip install -e '.[bench]') or not run: no rembg ratio")
    for name, ratio in ratios.items():
        print(f"({name}: {ratio.describe()})")
    for name, ratio in ratios.items():
        print(ratio.line(name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
