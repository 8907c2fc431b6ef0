"""Collect the images to predict from command-line arguments and plan their output names.

An argument is a folder (its images; sub-folders with ``recursive``), a text list (``.txt`` or
``.lst``: one image path per line, relative to the list's folder, ``#`` comments; a text file
with a line that does not name an image file, such as notes, is refused rather than read as
paths), an image file, or a glob pattern (``**`` allowed).  Outputs keep a folder's sub-folder structure (``rel`` below), so
``OUTDIR/<rel>.png`` never mixes two inputs; names that would still collide are errors.
Arguments that match nothing are reported, not ignored.

:func:`output_clashes` finds planned outputs that are input files themselves (the same file,
whatever the spelling: symlinks, hard links, relative or absolute paths, letter case on
case-insensitive file systems); a run with such a clash is refused before any model work.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from salseg.data.io import IMAGE_EXTENSIONS

IMAGE_SUFFIXES = frozenset(IMAGE_EXTENSIONS)
LIST_SUFFIXES = frozenset({".txt", ".lst"})
OUTPUT_KINDS = ("mask", "cutout", "composite", "preview")


@dataclass(frozen=True)
class InputItem:
    """One image to predict: its path and its output name (relative, without suffix)."""

    path: Path
    rel: str


@dataclass(frozen=True)
class InputProblem:
    """An argument or file that cannot be predicted, with the reason."""

    name: str
    problem: str


def output_path(outdir: str | Path, rel: str, kind: str) -> Path:
    """``OUTDIR/<rel>.png`` for masks, ``OUTDIR/<kind>/<rel>.png`` for the other outputs."""
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r}; expected one of {OUTPUT_KINDS}")
    base = Path(outdir) if kind == "mask" else Path(outdir) / kind
    return base / f"{rel}.png"


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)  # follows symlinks: the file that would be read or replaced
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def output_clashes(items: list[InputItem], outdir: str | Path,
                   kinds: tuple[str, ...] | list[str]) -> list[tuple[Path, Path]]:
    """``(output, input)`` pairs where a planned output file is one of the input files.

    Existing files are compared by identity (device and inode), so every spelling of the same
    file matches; planned outputs that do not exist yet are compared by resolved path (an input
    listed but missing could still be created by the run)."""
    folders: dict[Path, str] = {}

    def resolved(path: Path) -> str:  # the folder resolved once, not every file
        if path.parent not in folders:
            folders[path.parent] = os.path.realpath(path.parent)
        return os.path.normcase(os.path.join(folders[path.parent], path.name))

    by_id: dict[tuple[int, int], Path] = {}
    by_path: dict[str, Path] = {}
    for item in items:
        fid = _file_id(item.path)
        if fid is not None:
            by_id.setdefault(fid, item.path)
        by_path.setdefault(resolved(item.path), item.path)
    clashes = []
    for item in items:
        for kind in kinds:
            out = output_path(outdir, item.rel, kind)
            fid = _file_id(out)
            hit = by_id.get(fid) if fid is not None else by_path.get(resolved(out))
            if hit is not None:
                clashes.append((out, hit))
    return clashes


def describe_clashes(clashes: list[tuple[Path, Path]], limit: int = 20) -> str:
    """One message naming the clashing files (the first ``limit``)."""
    lines = [f"{len(clashes)} output file(s) would be written over input file(s); refusing "
             "(choose an output folder that holds no input, or other output kinds):"]
    lines += [f"  {out} is the input {inp}" for out, inp in clashes[:limit]]
    if len(clashes) > limit:
        lines.append(f"  ... and {len(clashes) - limit} more")
    return "\n".join(lines)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _folder_images(folder: Path, recursive: bool, exclude: Path | None) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (exclude is None or (root_path / d).resolve() != exclude))
        found.extend(root_path / f for f in sorted(files) if _is_image(root_path / f))
        if not recursive:
            break
    return found


def _read_list(path: Path) -> list[Path]:
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def collect_inputs(arguments: list[str], recursive: bool = False,
                   exclude: str | Path | None = None) -> tuple[list[InputItem], list[InputProblem]]:
    """Expand ``arguments`` into images and problems (see the module docstring)."""
    excluded = Path(exclude).resolve() if exclude is not None else None
    items: list[InputItem] = []
    problems: list[InputProblem] = []
    owners: dict[str, Path] = {}

    def add(path: Path, rel: str) -> None:
        key = rel.lower()  # case-insensitive file systems would collide too
        if key in owners:
            if owners[key].resolve() != path.resolve():
                problems.append(InputProblem(str(path), f"output name {rel!r} is already used by "
                                             f"{owners[key]}; predict it separately"))
            return
        owners[key] = path
        items.append(InputItem(path, rel))

    for arg in arguments:
        path = Path(arg).expanduser()
        if path.is_dir():
            images = _folder_images(path, recursive, excluded)
            if not images:
                problems.append(InputProblem(arg, "folder holds no images"
                                             + ("" if recursive else " (try --recursive)")))
            for img in images:
                add(img, img.relative_to(path).with_suffix("").as_posix())
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            try:
                listed = _read_list(path)
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(InputProblem(arg, f"cannot read the list ({exc})"))
                continue
            if not listed:
                problems.append(InputProblem(arg, "list is empty"))
            not_images = [p for p in listed if p.suffix.lower() not in IMAGE_SUFFIXES]
            if not_images:
                problems.append(InputProblem(arg, (
                    f"not a list of images: {len(not_images)} of its {len(listed)} line(s) "
                    f"name no image file (e.g. {not_images[0].name!r}); a .txt/.lst input "
                    "holds one image path per line")))
                continue
            for p in listed:
                add(p, p.stem)  # missing files are reported when they are read
        elif path.exists():
            add(path, path.stem)
        else:
            matches = sorted(Path(m) for m in glob.glob(arg, recursive=True))
            matches = [m for m in matches if m.is_file() and _is_image(m)]
            if not matches:
                problems.append(InputProblem(arg, "no such file or folder, and no image matches "
                                             "it as a pattern"))
            for m in matches:
                add(m, m.stem)
    return items, problems
