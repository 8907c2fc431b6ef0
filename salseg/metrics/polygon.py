"""Ramer-Douglas-Peucker simplification of an open pixel chain, reproducing the vertex count of
``cv2.approxPolyDP(curve, epsilon, closed=False)`` as OpenCV up to 4.12 computes it (the version
the DIS HCE reference values were produced with; OpenCV 4.13 changed the open-curve result).

OpenCV's procedure, followed step by step (so that ties resolve identically):

1. If the first and last points differ, the whole chain [0, n-1] is one segment. If they are
   equal, the chain is handled like a closed curve: the point farthest (squared Euclidean
   distance, first one on ties) from point 0 splits it into [0, k] and [k, 0] (wrapping), unless
   that distance is <= epsilon, in which case only point 0 is kept.
2. Segments are taken from a stack (the first half is processed first). For a segment the point
   with the largest distance to the chord (``|cross|``, first one on ties) is found; if
   ``max^2 <= eps^2 * |chord|^2`` the segment's start point is written, else the segment is split
   at that point. For an open chain the last point is written at the end.
3. A clean-up pass drops a middle vertex of three consecutive output vertices when it lies within
   ``eps / sqrt(2)`` of the line through its neighbours, both chord components are nonzero and it
   lies between them (``(b - a) . (c - b) >= 0``); after a drop the next vertex is skipped.
"""
from __future__ import annotations

import numpy as np


def _farthest_from_chord(pts: np.ndarray, idx: np.ndarray, start: np.ndarray, dx: int, dy: int) -> tuple[
    int, float
]:
    seg = pts[idx]
    dist = np.abs((seg[:, 1] - start[1]) * dx - (seg[:, 0] - start[0]) * dy)
    k = int(np.argmax(dist))
    return int(idx[k]), float(dist[k])


def approx_poly_dp_open(curve: np.ndarray, epsilon: float) -> np.ndarray:
    """Simplified open curve (vertices, (m, 2) int64) as OpenCV <= 4.12 ``approxPolyDP``
    returns it for ``closed=False``. ``curve`` is an (n, 2) array of integer (x, y) points."""
    pts = np.asarray(curve, dtype=np.int64).reshape(-1, 2)
    n = len(pts)
    if n == 0:
        return pts
    eps2 = epsilon * epsilon
    out: list[np.ndarray] = []
    stack: list[tuple[int, int]] = []
    first, last = pts[0], pts[n - 1]
    closed = bool(first[0] == last[0] and first[1] == last[1])
    if not closed:
        stack.append((0, n - 1))
    else:
        d = pts[1:] - first
        dist = d[:, 0] ** 2 + d[:, 1] ** 2
        if n > 1 and float(dist.max()) > eps2:
            k = int(np.argmax(dist)) + 1
            stack.append((k, 0))
            stack.append((0, k))
        else:
            out.append(first)
    while stack:
        s, e = stack.pop()
        end_pt = pts[e]
        start_pt = pts[s]
        nxt = (s + 1) % n
        if nxt != e:
            dx = int(end_pt[0] - start_pt[0])
            dy = int(end_pt[1] - start_pt[1])
            if e > s:
                idx = np.arange(s + 1, e)
            else:
                idx = np.concatenate([np.arange(s + 1, n), np.arange(0, e)])
            k, max_dist = _farthest_from_chord(pts, idx, start_pt, dx, dy)
            le_eps = max_dist * max_dist <= eps2 * (dx * dx + dy * dy)
        else:
            le_eps = True
        if le_eps:
            out.append(start_pt)
        else:
            stack.append((k, e))
            stack.append((s, k))
    if not closed:
        out.append(last)
    return _cleanup_open(out, eps2)


def _cleanup_open(verts: list[np.ndarray], eps2: float) -> np.ndarray:
    """OpenCV's final pass over the vertices of an open curve (see the module docstring)."""
    dst = [v.copy() for v in verts]
    count = len(dst)
    new_count = count
    if count == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pos = 0

    def read() -> np.ndarray:
        nonlocal pos
        v = dst[pos]
        pos += 1
        if pos >= count:
            pos = 0
        return v

    start = read()
    wpos = pos
    pt = read()
    i = 1
    while i < count - 1 and new_count > 2:
        end = read()
        dx, dy = int(end[0] - start[0]), int(end[1] - start[1])
        dist = abs(int(pt[0] - start[0]) * dy - int(pt[1] - start[1]) * dx)
        inner = int(pt[0] - start[0]) * int(end[0] - pt[0]) + int(pt[1] - start[1]) * int(end[1] - pt[1])
        if dist * dist <= 0.5 * eps2 * (dx * dx + dy * dy) and dx != 0 and dy != 0 and inner >= 0:
            new_count -= 1
            start = end
            dst[wpos] = end
            wpos = wpos + 1 if wpos + 1 < count else 0
            pt = read()
            i += 2
            continue
        start = pt
        dst[wpos] = pt
        wpos = wpos + 1 if wpos + 1 < count else 0
        pt = end
        i += 1
    dst[wpos] = pt
    return np.asarray(dst[:new_count], dtype=np.int64)
