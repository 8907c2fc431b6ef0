"""Collect the images to predict from command-line arguments and plan their output names.

An argument is a folder (its images; sub-folders with ``recursive``), a text list (``.txt`` or
``.lst``: one path per line, relative to the list's folder, ``#`` comments), an image file, or a
glob pattern (``**`` allowed).  Outputs keep a folder's sub-folder structure (``rel`` below), so
``OUTDIR/<rel>.png`` never mixes two inputs; names that would still collide are errors.
Arguments that match nothing are reported, not ignored.
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
