"""``salseg-predict``: masks, cut-outs, composites and previews for files, folders, globs and lists.

Example::

    salseg-predict photos/ -o out --model u2net --weights u2net.pth --save mask,cutout

Masks go to ``OUTDIR/<name>.png`` (8-bit, original size), so ``salseg-eval pred_dir=OUTDIR``
scores them directly; the other outputs go to ``OUTDIR/cutout/``, ``OUTDIR/composite/`` and
``OUTDIR/preview/``.  Exit status: 0 when every image was predicted (or skipped because its
outputs exist), 1 when any input failed, 2 for a usage error (including unreadable weights, an
output folder that cannot be written, and outputs that would replace input files: refused before
the model runs), 130 when interrupted.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from salseg.cli.errors import report
from salseg.predict.inputs import OUTPUT_KINDS

log = logging.getLogger("salseg.predict")

PROG = "salseg-predict"


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(k.strip().lower() for k in text.split(",") if k.strip()))
    bad = [k for k in kinds if k not in OUTPUT_KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"--save takes a comma-separated subset of "
                                         f"{','.join(OUTPUT_KINDS)}, got {text!r}")
    return kinds


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts if p]
    except ValueError:
        raise argparse.ArgumentTypeError(f"input size {text!r}: expected N or HxW") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"input size {text!r}: expected N or HxW")
    return values[0], values[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders, glob patterns or .txt/.lst lists of paths")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR",
                   help="output folder (created if needed)")
    p.add_argument("--model", help="architecture: a model card name (salseg-models cards; from "
                   "the catalogue for a model-zoo name, else guessed from the weights when "
                   "omitted)")
    p.add_argument("--weights", help=".ckpt, official .pth, .safetensors or .onnx file, or a "
                   "model-zoo name (salseg-models list), downloaded and verified on first use")
    p.add_argument("--random-weights", action="store_true",
                   help="run without weights (random initialisation; for testing only)")
    p.add_argument("--save", type=_kinds, default=("mask",), metavar="KINDS",
                   help="comma-separated outputs: mask,cutout,composite,preview (default mask)")
    g = p.add_argument_group("inference")
    g.add_argument("--backend", choices=("auto", "torch", "onnx"), default="torch",
                   help="onnx: run an .onnx file with onnxruntime; auto: onnxruntime on the CPU "
                   "in fp32 when installed (other weights are exported at load), else torch")
    g.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:N]")
    g.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="autocast precision (fp16 needs CUDA)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on)")
    g.add_argument("--tf32", action="store_true",
                   help="allow TF32 matmuls/convolutions on CUDA in fp32 (faster, less exact)")
    g.add_argument("--batch-size", type=int, default=1)
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader decoding workers")
    g.add_argument("--num-processes", type=int, default=1, metavar="N",
                   help="data-parallel: N processes, each predicting a shard of the inputs "
                   "(docs/distributed.md)")
    g.add_argument("--input-size", type=_size, default=None, metavar="N|HxW",
                   help="model input size (default: the model's, 320 for U2-Net, 1024 IS-Net)")
    g.add_argument("--resize", choices=("official", "antialias"), default="official",
                   help="official: exactly the official scripts (default); antialias: torch "
                   "bilinear with anti-aliasing, no uint8 truncation")
    g.add_argument("--onnx-threads", type=int, default=None, help="onnxruntime intra-op threads")
    g = p.add_argument_group("mask")
    g.add_argument("--raw-sigmoid", action="store_true",
                   help="keep the sigmoid probabilities instead of min-max normalising them")
    g.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="binarise the mask at T in [0, 1]")
    g.add_argument("--largest-component", action="store_true",
                   help="keep only the largest connected object")
    g.add_argument("--fill-holes", action="store_true", help="fill holes inside the object")
    g.add_argument("--erode", type=int, default=0, metavar="PX", help="shrink the mask by PX pixels")
    g.add_argument("--feather", type=float, default=0.0, metavar="SIGMA",
                   help="blur the mask edge (Gaussian sigma in pixels)")
    g = p.add_argument_group("cut-outs and composites")
    g.add_argument("--decontaminate", action="store_true",
                   help="estimate foreground colours at soft edges (removes background halos)")
    g.add_argument("--bg-color", default="white", help="composite background colour "
                   "(name, #rrggbb or r,g,b; default white)")
    g.add_argument("--bg-image", type=Path, default=None, help="composite background image "
                   "(stretched to each image's size)")
    g = p.add_argument_group("files")
    g.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    g.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images with more pixels (default 89478485, Pillow's limit; 0: "
                   "no limit)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    from salseg.predict.batch import DEFAULT_MAX_PIXELS, SaveOptions, predict_files
    from salseg.predict.inputs import collect_inputs
    from salseg.predict.postprocess import RefineOptions
    from salseg.predict.predictor import Predictor

    if args.weights is None and not args.random_weights:
        parser.error("--weights is required (or --random-weights for a smoke test)")
    if args.batch_size < 1 or args.num_workers < 0 or args.num_processes < 1:
        parser.error("--batch-size and --num-processes must be >= 1 and --num-workers >= 0")
    if args.bg_image is not None and not args.bg_image.is_file():
        parser.error(f"--bg-image {args.bg_image}: file not found")
    try:
        refine = RefineOptions(threshold=args.threshold, largest_component=args.largest_component,
                               fill_holes=args.fill_holes, erode=args.erode, feather=args.feather)
        from salseg.predict.compose import parse_color

        parse_color(args.bg_color)
    except ValueError as exc:
        parser.error(str(exc))

    from salseg.predict.parallel import launched_device, launched_rank, shard

    try:
        launched = launched_rank()
    except ValueError as exc:
        parser.error(str(exc))
    if launched is not None and args.num_processes > 1:
        parser.error("--num-processes starts its own processes; under torchrun/srun each "
                     "launched process already takes its shard (leave --num-processes at 1)")
    items, problems = collect_inputs(args.inputs, recursive=args.recursive, exclude=args.output)
    rank_note = ""
    if launched is not None:  # torchrun / srun: this process predicts its shard
        items = shard(items, launched.rank, launched.world)
        problems = problems if launched.rank == 0 else []  # listed once, by rank 0
        args.device = launched_device(args.device, launched)
        rank_note = f"rank {launched.rank}/{launched.world}: "
    for problem in problems:
        print(f"FAILED {problem.name}: {problem.problem}", file=sys.stderr)
    # before any model work: an output must never be an input, and the folder must be writable
    from salseg.atomic import OutputFolderError, ensure_writable_dir
    from salseg.predict.inputs import describe_clashes, output_clashes

    clashes = output_clashes(items, args.output, args.save)
    if clashes:
        return report(PROG, describe_clashes(clashes))
    try:
        ensure_writable_dir(args.output)
    except OutputFolderError as exc:
        return report(PROG, exc)

    try:
        import torch

        if not args.tf32:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        predictor_kwargs = dict(
            weights=None if args.random_weights else args.weights, model=args.model,
            device=args.device, precision=args.precision, backend=args.backend,
            input_size=args.input_size, resize=args.resize,
            normalization="sigmoid" if args.raw_sigmoid else None, refine_options=refine,
            channels_last=args.channels_last, onnx_threads=args.onnx_threads)
        if args.random_weights:  # the same random network in every process and every run
            torch.manual_seed(0)
        # built here also with --num-processes: bad weights are refused before any process starts
        kwargs = dict(predictor_kwargs)
        predictor = Predictor(kwargs.pop("weights"), **kwargs)
    except (ValueError, RuntimeError, OSError) as exc:  # WeightsError is a RuntimeError
        return report(PROG, exc)
    except KeyboardInterrupt:  # e.g. during a model-zoo download: nothing partial is kept
        print(f"{PROG}: interrupted (before any image was predicted)", file=sys.stderr)
        return 130
    if getattr(predictor, "is_classifier", False) and set(args.save) != {"mask"}:
        return report(PROG, f"{args.weights} predicts class maps ({', '.join(predictor.classes)}); "
                      "only --save mask applies (the mask holds the class index)")

    save = SaveOptions(kinds=args.save, overwrite=args.overwrite, decontaminate=args.decontaminate,
                       bg_color=args.bg_color, bg_image=args.bg_image)
    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    from salseg.predict.batch import RunSummary

    summary = RunSummary(total=len(problems), failed=list(problems))
    try:
        if args.num_processes > 1:
            from salseg.predict.parallel import predict_files_parallel

            predict_files_parallel(predictor_kwargs, items, args.output, save,
                                   num_processes=args.num_processes, summary=summary,
                                   progress=not args.quiet, batch_size=args.batch_size,
                                   num_workers=args.num_workers, max_pixels=max_pixels)
        else:
            predict_files(predictor, items, args.output, save, batch_size=args.batch_size,
                          num_workers=args.num_workers, max_pixels=max_pixels,
                          progress=not args.quiet, summary=summary)
    except (ValueError, RuntimeError, OSError) as exc:  # e.g. bad weights, raised by a rank
        return report(PROG, exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        print(rank_note + summary.report(), file=sys.stderr)
        return 130
    print(rank_note + summary.report(), file=sys.stderr)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
