"""``salseg-export``: weights -> ONNX (with an onnxruntime parity check), or ONNX -> weights.

Examples::

    salseg-export --model u2net --weights u2net.pth -o u2net.onnx
    salseg-export --model isnet --weights isnet.ckpt -o isnet-rembg.onnx --rembg
    salseg-export --import-onnx u2net.onnx -o u2net.safetensors     # for fine-tuning
    salseg-export --model birefnet_lite --weights BiRefNet_lite.pth -o birefnet_lite.onnx

Exit status 0 on success, 1 when the parity check fails, 2 for bad arguments or files.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from salseg.cli.errors import report as report_error
from salseg.cli.predict import _size

PROG = "salseg-export"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", required=True, type=Path,
                   help="output .onnx (export) or .safetensors/.pth (--import-onnx)")
    p.add_argument("--model", help="architecture (guessed from the weights when omitted)")
    p.add_argument("--weights", help=".ckpt, .pth, .safetensors or .onnx weights to export, or a "
                   "model-zoo name (salseg-models list)")
    p.add_argument("--import-onnx", type=Path, metavar="FILE",
                   help="convert this ONNX graph into a state dict instead of exporting")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-fold-batchnorm", action="store_true",
                   help="keep BatchNormalization nodes (default: folded into the convolutions)")
    p.add_argument("--features", action="store_true", help="IS-Net: also output the 6 features")
    p.add_argument("--rembg", action="store_true",
                   help="rembg-compatible file (u2net_custom / dis_custom sessions)")
    p.add_argument("--trace-size", type=int, default=320, help="tracing input size (>= 64)")
    p.add_argument("--input-size", type=_size, default=None, metavar="N|HxW",
                   help="the input size recorded in the file (default: the weights'); the "
                   "graph's fixed size for models whose export has no dynamic size (salseg-models cards)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument("--tolerance", type=float, default=1e-4, help="parity check tolerance")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return p


def _import(args: argparse.Namespace) -> int:
    from salseg.export.onnx import onnx_to_state_dict
    from salseg.models.registry import create_model
    from salseg.models.weights import guess_architecture, save_state_dict

    if args.output.exists() and not args.overwrite:
        return report_error(PROG, f"{args.output}: exists (use --overwrite)")
    state_dict = onnx_to_state_dict(args.import_onnx, args.model)
    name = args.model or guess_architecture(state_dict)
    model = create_model(name)
    model.load_state_dict(state_dict, strict=True)
    save_state_dict(model, args.output)
    print(f"{args.import_onnx} -> {args.output} ({name}, {len(state_dict)} tensors)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from salseg.models.weights import WeightsError

    try:
        if args.import_onnx is not None:
            return _import(args)
        if args.weights is None:
            parser.error("--weights is required for an export")
        from salseg.export.onnx import ExportCheckError, export_onnx
        from salseg.predict.predictor import build_model, weights_preprocessing

        model, name = build_model(args.weights, args.model)
        # the preprocessing the weights were trained with goes into the ONNX metadata
        preprocessing = weights_preprocessing(args.weights, name)
        if args.input_size is not None:
            preprocessing = replace(preprocessing, input_size=args.input_size)
        try:
            report = export_onnx(model, args.output, name, opset=args.opset,
                                 fold_batchnorm=not args.no_fold_batchnorm,
                                 include_features=args.features, rembg=args.rembg,
                                 trace_size=args.trace_size, check=not args.no_check,
                                 tolerance=args.tolerance, overwrite=args.overwrite,
                                 preprocessing=preprocessing)
        except ExportCheckError as exc:
            return report_error(PROG, f"parity check failed: {exc}", code=1, exc=exc)
    except (WeightsError, ValueError, FileExistsError, OSError) as exc:
        return report_error(PROG, exc)
    print(f"exported {report.model} -> {report.path} (outputs: {', '.join(report.outputs)})")
    if report.max_abs_diff:
        worst = max(report.max_abs_diff.values())
        print(f"onnxruntime vs PyTorch: max |diff| {worst:.3g} (tolerance {args.tolerance:g})")
    if report.rembg_session:
        print(f"rembg: new_session('{report.rembg_session}', "
              f"model_path='{report.path.resolve()}')")
    for note in report.notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
