"""Dataset sources: folder layouts on disk -> sorted lists of image/mask pairs.

A *source spec* is a small dict (from ``configs/data/*.yaml``) with a ``kind``:

* ``duts``      ``split: train|test``; ``layout: auto|standard|aug``; ``offline_hflip: bool``.
  Standard: ``<root>/DUTS/DUTS-TR/{DUTS-TR-Image,DUTS-TR-Mask}`` (10,553 pairs),
  ``<root>/DUTS/DUTS-TE/{DUTS-TE-Image,DUTS-TE-Mask}`` (5,019).  Official offline-augmented
  training layout (``u2net_train.py``): ``<root>/DUTS/DUTS-TR/{im_aug,gt_aug}`` (21,106).
  ``offline_hflip=true`` doubles the standard DUTS-TR virtually (every pair once more,
  horizontally flipped at load time; no files are written).
* ``dis5k``     ``split: DIS-TR|DIS-VD|DIS-TE1..DIS-TE4`` -> ``<root>/DIS5K/<split>/{im,gt}``.
* ``saliency``  ``name: DUT-OMRON|DUTS-TE|HKU-IS|ECSSD|PASCAL-S|SOD`` ->
  ``<root>/<name>/{im,gt}`` (common alternative folder names are accepted, see
  ``IMAGE_DIR_NAMES`` / ``MASK_DIR_NAMES``).
* ``folder``    ``images: DIR, masks: DIR`` (relative paths are relative to the root).
* ``list``      ``file: PATH``: one pair per line, ``image<sep>mask`` with a tab, comma or
  whitespace separator; ``#`` comments; relative paths are relative to the list file.
* ``synthetic`` ``split: train|val`` (+ generation parameters, see :mod:`salseg.data.synthetic`).

Files are matched by stem (extensions jpg, jpeg, png, bmp, tif, tiff, webp, any case).
Hidden files (``.*``) are ignored; other non-image files are reported, never silently
dropped.  Pairing problems (unmatched files, duplicate stems) are returned in a
:class:`Listing` for :mod:`salseg.data.check` to report.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from salseg.data.errors import DataLayoutError
from salseg.data.io import IMAGE_EXTENSIONS

ROOT_ENV_VAR = "SALSEG_DATA_ROOT"

DUTS_COUNTS = {"train": 10553, "test": 5019, "train_aug": 21106}
DIS5K_SPLITS = ("DIS-TR", "DIS-VD", "DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")
DIS5K_COUNTS = {"DIS-TR": 3000, "DIS-VD": 470, "DIS-TE1": 500, "DIS-TE2": 500, "DIS-TE3": 500,
                "DIS-TE4": 500}
SALIENCY_SETS = {  # canonical name -> (accepted folder names, expected count)
    "DUT-OMRON": (("DUT-OMRON", "DUT_OMRON", "DUTOMRON"), 5168),
    "DUTS-TE": (("DUTS-TE", "DUTS/DUTS-TE"), 5019),
    "HKU-IS": (("HKU-IS", "HKU_IS", "HKUIS"), 4447),
    "ECSSD": (("ECSSD",), 1000),
    "PASCAL-S": (("PASCAL-S", "PASCAL_S", "PASCALS"), 850),
    "SOD": (("SOD",), 300),
}
IMAGE_DIR_NAMES = ("im", "images", "image", "imgs", "img", "Image", "Images", "Imgs")
MASK_DIR_NAMES = ("gt", "masks", "mask", "GT", "Masks", "ground_truth_mask", "gts", "labels")


@dataclass(frozen=True)
class Pair:
    """One training/evaluation sample: an image, its mask (or None) and a display name."""

    image: str
    mask: str | None
    stem: str
    hflip: bool = False  # virtual offline horizontal flip (DUTS ``offline_hflip``)
    source: str = ""


@dataclass
class Listing:
    """Result of listing a source: the matched pairs and every pairing problem found."""

    name: str
    pairs: list[Pair] = field(default_factory=list)
    images_without_masks: list[str] = field(default_factory=list)
    masks_without_images: list[str] = field(default_factory=list)
    duplicate_stems: list[tuple[str, list[str]]] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    expected_count: int | None = None
    image_dir: str | None = None
    mask_dir: str | None = None

    @property
    def has_pairing_errors(self) -> bool:
        return bool(self.images_without_masks or self.masks_without_images or self.duplicate_stems)


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The data root: ``root`` if given, else ``$SALSEG_DATA_ROOT``, else ``./data``.

    A relative root is resolved against Hydra's original working directory when Hydra is
    running (so that ``data.root=data`` means the same thing in every run folder).
    """
    value = str(root) if root not in (None, "") else os.environ.get(ROOT_ENV_VAR) or "data"
    p = Path(value).expanduser()
    if not p.is_absolute():
        p = _original_cwd() / p
    return p.resolve()


def _original_cwd() -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            from hydra.utils import get_original_cwd

            return Path(get_original_cwd())
    except Exception:  # hydra absent or not running
        pass
    return Path.cwd()


def _list_dir(folder: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """Map stem -> image files in ``folder``; also return ignored non-image files."""
    by_stem: dict[str, list[Path]] = {}
    ignored: list[str] = []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            if not entry.is_file():
                continue
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() in IMAGE_EXTENSIONS:
                by_stem.setdefault(stem, []).append(Path(entry.path))
            else:
                ignored.append(entry.path)
    return by_stem, sorted(ignored)


def _duplicates(by_stem: dict[str, list[Path]]) -> list[tuple[str, list[str]]]:
    """Stems with several files, including stems that differ only by letter case."""
    dups: dict[str, list[str]] = {}
    folded: dict[str, list[str]] = {}
    for stem, files in by_stem.items():
        folded.setdefault(stem.lower(), []).append(stem)
        if len(files) > 1:
            dups[stem] = sorted(str(f) for f in files)
    for _low, stems in folded.items():
        if len(stems) > 1:
            files = sorted(str(f) for s in stems for f in by_stem[s])
            dups[" / ".join(sorted(stems))] = files
    return sorted(dups.items())


def pair_folders(
    images: str | Path,
    masks: str | Path | None,
    name: str = "",
    expected_count: int | None = None,
) -> Listing:
    """Match ``images`` and ``masks`` folders by stem (``masks=None``: images only)."""
    images = Path(images)
    if not images.is_dir():
        raise DataLayoutError(f"image folder not found for source {name or images}", images)
    if masks is not None and not Path(masks).is_dir():
        raise DataLayoutError(f"mask folder not found for source {name or masks}", masks)
    im_by_stem, ignored = _list_dir(images)
    listing = Listing(name=name or images.name, expected_count=expected_count,
                      image_dir=str(images), mask_dir=None if masks is None else str(masks))
    listing.ignored_files.extend(ignored)
    dup_im = _duplicates(im_by_stem)
    listing.duplicate_stems.extend(dup_im)
    if masks is None:
        for stem in sorted(im_by_stem):
            files = im_by_stem[stem]
            if len(files) == 1:
                listing.pairs.append(Pair(str(files[0]), None, stem, source=listing.name))
        return listing
    gt_by_stem, ignored_gt = _list_dir(Path(masks))
    listing.ignored_files.extend(ignored_gt)
    listing.duplicate_stems.extend(_duplicates(gt_by_stem))
    bad = {s for s, files in im_by_stem.items() if len(files) > 1}
    bad |= {s for s, files in gt_by_stem.items() if len(files) > 1}
    for stem in sorted(im_by_stem):
        if stem not in gt_by_stem:
            listing.images_without_masks.extend(str(f) for f in im_by_stem[stem])
        elif stem not in bad:
            listing.pairs.append(
                Pair(str(im_by_stem[stem][0]), str(gt_by_stem[stem][0]), stem, source=listing.name)
            )
    for stem in sorted(gt_by_stem):
        if stem not in im_by_stem:
            listing.masks_without_images.extend(str(f) for f in gt_by_stem[stem])
    return listing


def read_pair_list(file: str | Path, name: str = "") -> Listing:
    """Read a list file of ``image<sep>mask`` lines (tab, comma or whitespace separated)."""
    file = Path(file)
    if not file.is_file():
        raise DataLayoutError("pair list file not found", file)
    base = file.parent
    listing = Listing(name=name or file.stem)
    seen: dict[str, list[str]] = {}
    for lineno, raw in enumerate(file.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "\t" in line:
            parts = [p.strip() for p in line.split("\t")]
        elif "," in line:
            parts = [p.strip() for p in line.split(",")]
        else:
            parts = line.split()
        parts = [p for p in parts if p]
        if len(parts) not in (1, 2):
            raise DataLayoutError(
                f"line {lineno}: expected 'image<TAB>mask' (or one image path), got {raw!r}", file
            )
        im = Path(parts[0]) if Path(parts[0]).is_absolute() else base / parts[0]
        gt = None
        if len(parts) == 2:
            gt = Path(parts[1]) if Path(parts[1]).is_absolute() else base / parts[1]
        if not im.is_file():
            listing.images_without_masks.append(f"{im} (listed on line {lineno}, file missing)")
            continue
        if gt is not None and not gt.is_file():
            listing.masks_without_images.append(f"{gt} (listed on line {lineno}, file missing)")
            continue
        stem = im.stem
        seen.setdefault(stem, []).append(str(im))
        listing.pairs.append(Pair(str(im), None if gt is None else str(gt), stem, source=listing.name))
    listing.duplicate_stems = sorted((s, f) for s, f in seen.items() if len(f) > 1)
    if listing.duplicate_stems:
        dup = {s for s, _ in listing.duplicate_stems}
        listing.pairs = [p for p in listing.pairs if p.stem not in dup]
    return listing


def _first_dir(base: Path, names: Iterable[str]) -> Path | None:
    for n in names:
        if (base / n).is_dir():
            return base / n
    return None


def _duts(root: Path, split: str, layout: str, offline_hflip: bool) -> Listing:
    if split in ("train", "DUTS-TR", "tr"):
        bases = [root / "DUTS" / "DUTS-TR", root / "DUTS-TR", root / "DUTS" / "DUTS-TR" / "DUTS-TR"]
        std = ("DUTS-TR-Image", "DUTS-TR-Mask")
        for base in bases:
            has_std = (base / std[0]).is_dir() and (base / std[1]).is_dir()
            has_aug = (base / "im_aug").is_dir() and (base / "gt_aug").is_dir()
            if layout in ("auto", "standard") and has_std:
                lst = pair_folders(base / std[0], base / std[1], "DUTS-TR", DUTS_COUNTS["train"])
                if offline_hflip:
                    lst.pairs = [q for p in lst.pairs for q in (p, _flipped(p))]
                    lst.expected_count = 2 * DUTS_COUNTS["train"]
                return lst
            if layout in ("auto", "aug") and has_aug:
                if offline_hflip:
                    raise DataLayoutError(
                        "offline_hflip=true with the official im_aug/gt_aug layout would flip the "
                        "already-flipped copies again; use one or the other", base)
                return pair_folders(base / "im_aug", base / "gt_aug", "DUTS-TR-aug",
                                    DUTS_COUNTS["train_aug"])
        raise DataLayoutError(
            "DUTS training set not found. Expected <root>/DUTS/DUTS-TR/DUTS-TR-Image/*.jpg and "
            "<root>/DUTS/DUTS-TR/DUTS-TR-Mask/*.png (or the official offline-augmented "
            "<root>/DUTS/DUTS-TR/im_aug + gt_aug). Set data.root=... or $SALSEG_DATA_ROOT, or run "
            "scripts/prepare_duts.py", root)
    if split in ("test", "DUTS-TE", "te"):
        for base in (root / "DUTS" / "DUTS-TE", root / "DUTS-TE"):
            im = _first_dir(base, ("DUTS-TE-Image", *IMAGE_DIR_NAMES))
            gt = _first_dir(base, ("DUTS-TE-Mask", *MASK_DIR_NAMES))
            if im and gt:
                return pair_folders(im, gt, "DUTS-TE", DUTS_COUNTS["test"])
        raise DataLayoutError(
            "DUTS test set not found. Expected <root>/DUTS/DUTS-TE/DUTS-TE-Image/*.jpg and "
            "<root>/DUTS/DUTS-TE/DUTS-TE-Mask/*.png. Set data.root=... or $SALSEG_DATA_ROOT, or run "
            "scripts/prepare_duts.py", root)
    raise ValueError(f"DUTS split must be 'train' or 'test', got {split!r}")


def _flipped(p: Pair) -> Pair:
    return Pair(p.image, p.mask, p.stem + "__hflip", hflip=True, source=p.source)


def _dis5k(root: Path, split: str) -> Listing:
    if split not in DIS5K_SPLITS:
        raise ValueError(f"DIS5K split must be one of {DIS5K_SPLITS}, got {split!r}")
    for base in (root / "DIS5K" / split, root / split):
        if (base / "im").is_dir() and (base / "gt").is_dir():
            return pair_folders(base / "im", base / "gt", split, DIS5K_COUNTS[split])
    raise DataLayoutError(
        f"DIS5K split {split} not found. Expected <root>/DIS5K/{split}/im/*.jpg and "
        f"<root>/DIS5K/{split}/gt/*.png. Set data.root=... or $SALSEG_DATA_ROOT, or run "
        "scripts/prepare_dis5k.py", root)


def _saliency(root: Path, name: str) -> Listing:
    canon = {k.lower().replace("-", "").replace("_", ""): k for k in SALIENCY_SETS}
    key = canon.get(name.lower().replace("-", "").replace("_", ""))
    if key is None:
        raise ValueError(f"unknown saliency test set {name!r}; expected one of {list(SALIENCY_SETS)}")
    folders, count = SALIENCY_SETS[key]
    for folder in folders:
        base = root / folder
        if not base.is_dir():
            continue
        im = _first_dir(base, (*IMAGE_DIR_NAMES, f"{key}-Image"))
        gt = _first_dir(base, (*MASK_DIR_NAMES, f"{key}-Mask"))
        if im and gt:
            return pair_folders(im, gt, key, count)
    raise DataLayoutError(
        f"saliency test set {key} not found. Expected <root>/{folders[0]}/im/*.jpg and "
        f"<root>/{folders[0]}/gt/*.png (folder names also accepted: images: "
        f"{', '.join(IMAGE_DIR_NAMES)}; masks: {', '.join(MASK_DIR_NAMES)}). "
        "Set data.root=... or $SALSEG_DATA_ROOT (see docs/data.md)", root)


def _rel(root: Path, p: str | Path) -> Path:
    """Absolute paths as given; a relative path is taken from the current directory when it
    exists there (what users type on the command line), else from the data root."""
    q = Path(str(p)).expanduser()
    if q.is_absolute():
        return q
    return q.resolve() if q.exists() else root / q


def list_source(spec: Mapping, root: str | Path | None = None,
                synthetic_defaults: Mapping | None = None) -> Listing:
    """List the pairs of one source spec (see the module docstring)."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    r = resolve_root(root)
    if kind == "duts":
        return _duts(r, str(spec.get("split", "train")), str(spec.get("layout", "auto")),
                     bool(spec.get("offline_hflip", False)))
    if kind == "dis5k":
        return _dis5k(r, str(spec["split"]))
    if kind == "saliency":
        return _saliency(r, str(spec["name"]))
    if kind == "folder":
        masks = spec.get("masks")
        return pair_folders(_rel(r, spec["images"]), None if masks is None else _rel(r, masks),
                            str(spec.get("name") or ""))
    if kind == "list":
        return read_pair_list(_rel(r, spec["file"]), str(spec.get("name") or ""))
    if kind == "synthetic":
        from salseg.data.synthetic import ensure_synthetic, make_spec

        params = dict(synthetic_defaults or {})
        params.update({k: v for k, v in spec.items() if k not in ("split", "name")})
        split = str(spec.get("split", "train"))
        if split not in ("train", "val"):
            raise ValueError(f"synthetic split must be 'train' or 'val', got {split!r}")
        sspec = make_spec(**params)
        folder = ensure_synthetic(r, sspec)
        n = sspec.n_train if split == "train" else sspec.n_val
        return pair_folders(folder / split / "im", folder / split / "gt",
                            f"synthetic-{sspec.variant}-{split}", n)
    raise ValueError(
        f"unknown source kind {kind!r}; expected duts, dis5k, saliency, folder, list or synthetic"
    )
