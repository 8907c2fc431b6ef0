"""Border following of binary images (Suzuki and Abe, CVGIP 1985), reproducing the contours that
OpenCV's ``cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)`` returns: the same
contours, the same starting pixel and direction of every contour and the same order of the list.
HCE (DIS) depends on all three, and implementing them here keeps HCE independent of the OpenCV
version.

What OpenCV does, and therefore this module:

* the image is padded with one pixel of background; every nonzero pixel is foreground;
* raster scan (row by row, left to right); an *outer* border starts at a foreground pixel whose
  left neighbour is background and which no border has visited yet; a *hole* border starts at a
  background pixel whose left neighbour is foreground and not marked as the right end of an
  already followed border (its start point is that foreground pixel);
* border following: from the start pixel, search its 8 neighbours clockwise (from north-west for
  an outer border, from east-south-east... i.e. starting after east for a hole) for the first
  foreground pixel; then repeatedly search counter-clockwise around the current pixel, starting
  just after the previous pixel, write the current pixel and move; stop when the walk returns to
  the start pixel and the current pixel is the first neighbour found. Visited pixels get the
  border's number (negated when their east neighbour was examined and is background);
* the parent of a new border follows Suzuki-Abe's table from the last border number met in the
  row (LNBD); the list is the pre-order walk of the border tree in which siblings appear newest
  first (OpenCV inserts each new border at the front of its parent's children).

Points are returned as (x, y) int32 arrays of shape (n, 2), like ``contour[:, 0, :]``.
"""
from __future__ import annotations

import numpy as np

# chain code directions: 0 = east, then counter-clockwise (y grows downwards)
_DX = (1, 1, 0, -1, -1, -1, 0, 1)
_DY = (0, -1, -1, -1, 0, 1, 1, 1)


class _Border:
    __slots__ = ("is_hole", "parent", "children", "points")

    def __init__(self, is_hole: bool, parent: int) -> None:
        self.is_hole = is_hole
        self.parent = parent
        self.children: list[int] = []
        self.points: np.ndarray | None = None


def _follow(lab: np.ndarray, width: int, start: int, is_hole: bool, nbd: int) -> list[int]:
    """Follow one border from flat index ``start`` in the padded label image ``lab`` (int32,
    modified in place) and return the flat indices of its pixels in OpenCV's order."""
    deltas = [1, -width + 1, -width, -width - 1, -1, width - 1, width, width + 1]
    deltas = deltas + deltas
    s_end = s = 0 if is_hole else 4
    while True:
        s = (s - 1) & 7
        i1 = start + deltas[s]
        if lab[i1] != 0 or s == s_end:
            break
    if s == s_end and lab[i1] == 0:  # isolated pixel
        lab[start] = -nbd
        return [start]
    out = []
    i3 = start
    while True:
        s_end = s
        while s < 15:
            s += 1
            i4 = i3 + deltas[s]
            if lab[i4] != 0:
                break
        s &= 7
        if 1 <= s <= s_end:  # the east neighbour was examined and is background
            lab[i3] = -nbd
        elif lab[i3] == 1:
            lab[i3] = nbd
        out.append(i3)
        if i4 == start and i3 == i1:
            return out
        i3 = i4
        s = (s + 4) & 7


def find_contours(mask: np.ndarray) -> tuple[list[np.ndarray], list[tuple[int, bool]]]:
    """Contours of a 2-D mask (nonzero = foreground) as OpenCV's ``findContours`` with
    ``RETR_TREE`` and ``CHAIN_APPROX_NONE`` returns them.

    Returns ``(contours, info)``: ``contours[i]`` is an (n, 2) int32 array of (x, y) points;
    ``info[i] = (parent index or -1, is_hole)``.
    """
    if mask.ndim != 2:
        raise ValueError(f"find_contours expects a 2-D mask, got shape {mask.shape}")
    h, w = mask.shape
    width = w + 2
    binary = np.zeros((h + 2, width), dtype=np.int32)
    binary[1:-1, 1:-1] = mask != 0
    lab = binary.reshape(-1).copy()  # 0 background, 1 unvisited foreground, +-k border k
    borders: list[_Border] = [_Border(True, -1)]  # index 1 = the frame (a "hole")
    borders.insert(0, _Border(True, -1))  # index 0 unused, keeps border k at index k
    roots: list[int] = []
    # candidate starts: every change of the binary value along a row
    change = binary[:, 1:] != binary[:, :-1]
    change[:, -1] = False  # OpenCV does not scan the right padding column
    ys, xs = np.nonzero(change)
    xs = xs + 1
    i = 0
    n_cand = len(ys)
    nbd = 1
    while i < n_cand:
        y = int(ys[i])
        row0 = y * width
        lnbd = 1  # the frame
        last = 0  # pixels (last, x) not yet looked at for LNBD
        while i < n_cand and ys[i] == y:
            x = int(xs[i])
            i += 1
            idx = row0 + x
            p = int(lab[idx])
            prev = int(lab[idx - 1])
            if p == 0 and x - 1 > last:  # end of a foreground run: last border number in it
                seg = lab[row0 + last + 1: idx]
                marked = np.flatnonzero((seg != 1) & (seg != 0))
                if marked.size:
                    lnbd = abs(int(seg[marked[-1]]))
            if prev == 0 and p == 1:
                is_hole = False
                origin = idx
            elif p == 0 and prev >= 1:
                is_hole = True
                origin = idx - 1
            else:
                if p not in (0, 1):
                    lnbd = abs(p)
                last = x
                continue
            ref = borders[lnbd]
            if lnbd == 1:
                parent = 1
            elif ref.is_hole == is_hole:
                parent = ref.parent if ref.parent > 0 else 1
            else:
                parent = lnbd
            nbd += 1
            border = _Border(is_hole, parent)
            borders.append(border)
            if parent == 1:
                roots.append(nbd)
            else:
                borders[parent].children.append(nbd)
            pts = np.asarray(_follow(lab, width, origin, is_hole, nbd), dtype=np.int64)
            border.points = np.stack([pts % width - 1, pts // width - 1], axis=1).astype(np.int32)
            lnbd = nbd
            last = x
    contours: list[np.ndarray] = []
    info: list[tuple[int, bool]] = []
    position: dict[int, int] = {}
    stack = [(k, -1) for k in roots]  # popped last-in first: newest root first
    while stack:
        k, parent_pos = stack.pop()
        position[k] = len(contours)
        contours.append(borders[k].points)  # type: ignore[arg-type]
        info.append((parent_pos, borders[k].is_hole))
        stack.extend((c, position[k]) for c in borders[k].children)
    return contours, info
