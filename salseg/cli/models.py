"""``salseg-models``: the pretrained model zoo from the command line (docs/zoo.md).

    salseg-models list                      the catalogue, one line per checkpoint
    salseg-models cards                     the architectures (model cards): --model / model= names
    salseg-models info isnet-anime          everything the catalogue says about one name
    salseg-models download u2netp isnet     fetch (and convert) into the cache, with progress
    salseg-models verify                    re-hash every cached file against its checksum
    salseg-models path u2netp               the local weights file, or where to put it (no download)
    salseg-models forget u2net_human_seg    delete a name's cached files and recorded checksums
"""
from __future__ import annotations

import argparse
import sys

from salseg.cli.errors import report
from salseg.zoo import cache, catalogue

PROG = "salseg-models"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the catalogue")
    sub.add_parser("cards", help="list the architectures (model cards) that --model and "
                   "model= accept")
    info = sub.add_parser("info", help="describe one checkpoint")
    info.add_argument("name")
    dl = sub.add_parser("download", help="download (and convert) checkpoints into the cache")
    dl.add_argument("names", nargs="+")
    dl.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_parser("verify", help="re-hash every cached file against its checksum")
    path = sub.add_parser("path", help="print the local weights file of a name, or where to "
                          "put it (never downloads)")
    path.add_argument("name")
    forget = sub.add_parser("forget", help="delete a name's cached files and the checksum "
                            "recorded at its first download (trust on first use)")
    forget.add_argument("names", nargs="+")
    return p


def _cached_mark(entry: catalogue.ZooEntry) -> str:
    return "yes" if any(cache.cache_path(s).is_file() for s in entry.sources) else "-"


def cmd_list() -> int:
    rows = [("name", "architecture", "out", "size MB", "license", "cached", "what it is for")]
    for e in catalogue.entries():
        lic = e.license.split(" ")[0].rstrip(":") + ("" if e.commercial_use else " (NC)")
        rows.append((e.name, e.architecture, str(e.out_ch),
                     f"{e.size_mb:g}" if e.size_mb else "?", lic, _cached_mark(e),
                     e.description))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:6], widths)) + "  " + r[6])
    print(f"\ncache: {cache.downloads_dir()}")
    return 0


def cmd_cards() -> int:
    """One line per registered model card: the names ``--model`` / ``model=`` accept."""
    from salseg.models.card import cards

    rows = [("name", "aliases", "input", "outputs", "predicts", "official parity")]
    for c in cards():
        h, w = c.preprocessing.input_size
        rows.append((c.name, ", ".join(c.aliases) or "-", f"{h}x{w}",
                     ", ".join(c.side_names), "yes" if c.can_predict else "no (takes masks)",
                     c.official_manifest or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1])
    return 0


def cmd_info(name: str) -> int:
    from salseg.zoo.published import rows_for

    e = catalogue.get_entry(name)
    pre = e.preprocessing_overrides()
    print(f"{e.name}: {e.description}")
    print(f"  architecture:   {e.architecture} (out_ch={e.out_ch})")
    print(f"  prediction:     {e.prediction}"
          + (f" over classes {', '.join(e.classes)}" if e.classes else ""))
    from salseg.models.preprocess import Preprocessor

    spec = Preprocessor(e.architecture, e.input_size, overrides=pre).spec
    print(f"  preprocessing:  {spec.input_size[0]}x{spec.input_size[1]}, scale {spec.scale}, "
          f"mean {spec.mean}, std {spec.std} "
          + (f"(catalogue overrides: {', '.join(sorted(pre))})" if pre
             else "(the architecture's official preprocessing)"))
    print(f"  license:        {e.license}")
    print(f"  commercial use: {'yes' if e.commercial_use else 'NO (non-commercial license)'}")
    print(f"  training data:  {e.training_data}")
    print(f"  paper:          {e.paper}")
    for key in e.published:
        for row in rows_for(key):
            scores = ", ".join(f"{m} {v:g}" for m, v in row.scores.items())
            print(f"  published:      {row.dataset}: {scores}  [{row.source}]")
    print("  sources (tried in order; SALSEG_ZOO_MIRROR first by file name):")
    for i, s in enumerate(e.sources, 1):
        if s.checksum:
            check = s.checksum
        else:
            pin = cache.recorded_pin(s)
            check = "UNPINNED (no published checksum): trusted on first use" + (
                f", recorded {pin}" if pin else ", nothing recorded yet")
        print(f"    {i}. {s.filename} - {s.origin}\n       {s.url}\n       {check}")
        if s.pin_note:
            print(f"       ({s.pin_note})")
        if cache.cache_path(s).is_file():
            print(f"       cached: {cache.cache_path(s)}")
    for note in e.notes:
        print(f"  note: {note}")
    return 0


def cmd_download(names: list[str], progress: bool) -> int:
    from salseg.zoo.resolve import resolve_weights

    entries = [catalogue.get_entry(n) for n in names]  # unknown names fail before downloading
    for e in entries:
        resolved = resolve_weights(e.name, progress=progress)
        print(f"{e.name}: {resolved.path}")
    return 0


def cmd_verify() -> int:
    checked = bad = 0
    for e in catalogue.entries():
        for s in {s.filename: s for s in e.sources}.values():
            path = cache.cache_path(s)
            if not path.is_file():
                continue
            checked += 1
            try:
                got = cache.verify_file(path, s, name=e.name)
                print(f"ok       {path.name}  {got}")
            except cache.ChecksumError as exc:
                bad += 1
                print(f"MISMATCH {exc}")
    print(f"{checked} cached file(s) checked, {bad} mismatch(es) in {cache.downloads_dir()}")
    return 1 if bad else 0


def cmd_path(name: str) -> int:
    """Where the name's weights file is, or where to put it: never downloads.

    A verified cached file (the converted state dict for an ONNX source that was converted) is
    printed as it is; otherwise the path the first source's file is downloaded to, with a note
    on stderr naming the other accepted files."""
    from salseg.zoo.convert import converted_path

    e = catalogue.get_entry(name)
    hit = cache.find_cached(e)
    if hit is not None:
        path, source = hit
        if source.format == "onnx":
            converted = converted_path(e, path)
            path = converted if converted.is_file() else path
        print(path)
        return 0
    files = list(dict.fromkeys(s.filename for s in e.sources))
    print(cache.downloads_dir() / files[0])
    others = f" (or one of: {', '.join(files[1:])}, in the same folder)" if files[1:] else ""
    print(f"salseg-models: note: {e.name} is not in the cache yet: put {files[0]} at this path"
          f"{others}, or run 'salseg-models download {e.name}'", file=sys.stderr)
    return 0


def cmd_forget(names: list[str]) -> int:
    entries = [catalogue.get_entry(n) for n in names]
    for e in entries:
        removed = cache.forget(e)
        for path in removed:
            print(f"{e.name}: removed {path}" if path != cache.pins_path()
                  else f"{e.name}: removed the recorded checksum(s) from {path}")
        if not removed:
            print(f"{e.name}: nothing cached")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return cmd_list()
        if args.command == "cards":
            return cmd_cards()
        if args.command == "info":
            return cmd_info(args.name)
        if args.command == "download":
            return cmd_download(args.names, not args.no_progress)
        if args.command == "verify":
            return cmd_verify()
        if args.command == "forget":
            return cmd_forget(args.names)
        return cmd_path(args.name)
    except KeyError as exc:
        return report(PROG, exc)
    except cache.ZooError as exc:
        return report(PROG, exc, code=1)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (nothing partial is left in the cache)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
