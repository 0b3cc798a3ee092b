"""Campus layout: path grid, blocks, covered walkway, repeated-facade blocks and buildings.

Everything here draws from ONE random stream (``rng`` of :func:`campusgps.synth.world.build_world`) in a
fixed order, so the same (preset, seed) always gives the same campus. :class:`Site` answers the placement
questions the later stages ask (inside a building? on a path? under the walkway?).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from campusgps.synth import textures as T

ROAD_SIDEWALK = 2.2   # pavement beside the road, metres (each side)


def box_corners(cx, cy, w, d, angle_deg=0.0) -> np.ndarray:
    """Corners (4, 2), counter-clockwise, of a w (along the rotated x axis) by d box."""
    a = math.radians(angle_deg)
    ca, sa = math.cos(a), math.sin(a)
    loc = np.array([[-w / 2, -d / 2], [w / 2, -d / 2], [w / 2, d / 2], [-w / 2, d / 2]])
    rot = np.array([[ca, -sa], [sa, ca]])
    return loc @ rot.T + np.array([cx, cy])


@dataclass
class Layout:
    x0: float
    y0: float
    x1: float
    y1: float
    xb: list          # block boundaries along x: campus edge, path lines..., campus edge
    yb: list
    road_i: int       # index of the horizontal path that is a road (-1: none)
    paths: list       # dicts {name, kind, width, pts}
    blocks: list      # dicts {i, j, box, type}; type: buildings | repeated | plaza | lawn
    walkway: dict     # {x0, x1, y, width, z, pillar_every}
    wk_j: int         # horizontal path line under the walkway
    rep_j: int        # block row of the repeated facades
    buildings: list   # dicts {id, number, boxes, height, style, repeated, face}

    @property
    def nbx(self) -> int:
        return len(self.xb) - 1

    @property
    def nby(self) -> int:
        return len(self.yb) - 1

    def block(self, i, j) -> dict:
        return self.blocks[i * self.nby + j]


class Site:
    """Placement tests against building footprints, paths and the walkway.

    ``footprints`` is the live list of ``(corners, height)``: landmarks appended later count too.
    """

    def __init__(self, footprints: list, paths: list, walkway: dict):
        self.footprints, self.paths, self.walkway = footprints, paths, walkway

    def in_building(self, x, y, pad=1.0):
        for c, _ in self.footprints:
            mn, mx = c.min(0) - pad, c.max(0) + pad
            if mn[0] <= x <= mx[0] and mn[1] <= y <= mx[1]:
                # rotated boxes: use polygon test
                if cv2.pointPolygonTest(c.astype(np.float32), (float(x), float(y)), True) > -pad:
                    return True
        return False

    def on_path(self, x, y, pad=0.8):
        for p in self.paths:
            (ax, ay), (bx_, by_) = p["pts"]
            hw = p["width"] / 2 + (ROAD_SIDEWALK if p["kind"] == "road" else 0) + pad
            if ay == by_ and abs(y - ay) < hw and min(ax, bx_) <= x <= max(ax, bx_):
                return True
            if ax == bx_ and abs(x - ax) < hw and min(ay, by_) <= y <= max(ay, by_):
                return True
        return False

    def under_walkway(self, x, y, pad=0.5):
        wk = self.walkway
        return wk["x0"] - pad <= x <= wk["x1"] + pad and abs(y - wk["y"]) <= wk["width"] / 2 + pad


# --- grid: path lines, paths, blocks -------------------------------------------------------------------
def _grid_lines(rng, lo, hi, block) -> list:
    out, pos = [], lo
    while True:
        pos += rng.uniform(*block)
        if pos > hi - block[0] * 0.8:
            break
        out.append(float(pos))
    # centre the grid
    if out:
        shift = ((hi - out[-1]) - (out[0] - lo)) / 2
        out = [v + shift for v in out]
    return out


def _make_paths(xs, ys, road_i, x0, y0, x1, y1) -> list:
    paths = []
    for j, yv in enumerate(ys):
        kind = "road" if j == road_i else "path"
        paths.append({"name": f"h{j}", "kind": kind, "width": 7.0 if kind == "road" else 4.0,
                      "pts": [[x0 - 5, yv], [x1 + 5, yv]]})
    for i, xv in enumerate(xs):
        paths.append({"name": f"v{i}", "kind": "path", "width": 4.0, "pts": [[xv, y0 - 5], [xv, y1 + 5]]})
    # ring path around the campus
    paths.append({"name": "ring_s", "kind": "path", "width": 3.0, "pts": [[x0 - 1.5, y0], [x1 + 1.5, y0]]})
    paths.append({"name": "ring_n", "kind": "path", "width": 3.0, "pts": [[x0 - 1.5, y1], [x1 + 1.5, y1]]})
    paths.append({"name": "ring_w", "kind": "path", "width": 3.0, "pts": [[x0, y0 - 1.5], [x0, y1 + 1.5]]})
    paths.append({"name": "ring_e", "kind": "path", "width": 3.0, "pts": [[x1, y0 - 1.5], [x1, y1 + 1.5]]})
    return paths


def _make_blocks(xb, yb, road_i) -> list:
    """Blocks between lines; each bounded by the half widths of adjacent paths + set-back."""
    road_half = 3.5 + ROAD_SIDEWALK
    blocks = []
    for i in range(len(xb) - 1):
        for j in range(len(yb) - 1):
            sb = 3.0
            bx0 = xb[i] + 2.0 + sb
            bx1 = xb[i + 1] - 2.0 - sb
            hy_lo = road_half if (j - 1) == road_i else 2.0
            hy_hi = road_half if j == road_i else 2.0
            by0 = yb[j] + hy_lo + sb
            by1 = yb[j + 1] - hy_hi - sb
            blocks.append({"i": i, "j": j, "box": [bx0, by0, bx1, by1], "type": "buildings"})
    return blocks


# --- special areas: walkway, repeated facades, plazas, lawns -----------------------------------------
def _mark_special_blocks(L: Layout, rng, preset: str, wi0: int, nwk: int) -> None:
    xb, yb, blocks = L.xb, L.yb, L.blocks
    # repeated facades: the block row on the other side of the walkway path, nwk blocks wide if possible
    rep_blocks = [(i, L.rep_j) for i in range(L.nbx)
                  if abs(i - (wi0 + (nwk - 1) / 2)) <= max(0.5, nwk / 2 - 0.5) + 0.01]
    for i, j in rep_blocks:
        L.block(i, j)["type"] = "repeated"
    # identical copies far away elsewhere on campus (the confusions that hurt most: same look, 100 m apart)
    n_copies = {"tiny": 0, "small": 2, "medium": 4}.get(preset, 2)
    rc = np.mean([[xb[i] + xb[i + 1], yb[j] + yb[j + 1]] for i, j in rep_blocks], 0) / 2

    def centre(b):
        return np.array([(xb[b["i"]] + xb[b["i"] + 1]) / 2, (yb[b["j"]] + yb[b["j"] + 1]) / 2])

    cands = sorted(((float(np.hypot(*(centre(b) - rc))), k)
                    for k, b in enumerate(blocks) if b["type"] == "buildings" and b["j"] != L.rep_j), reverse=True)
    chosen = []
    for dist, k in cands:
        if len(chosen) >= n_copies:
            break
        c = centre(blocks[k])
        if all(np.hypot(*(c - cc)) > 60 for cc in chosen) and dist > 50:
            chosen.append(c)
            blocks[k]["type"] = "repeated"
    free = [(i, j) for i in range(L.nbx) for j in range(L.nby) if L.block(i, j)["type"] == "buildings"]
    order = rng.permutation(len(free))
    n_plaza = 1 if preset == "tiny" else max(2, len(free) // 8)
    n_lawn = 0 if preset == "tiny" else max(1, len(free) // 10)
    for k, idx in enumerate(order[:n_plaza + n_lawn]):
        L.block(*free[idx])["type"] = "plaza" if k < n_plaza else "lawn"


def _walkway(xb, ys, road_i, walkway_blocks) -> tuple[dict, int, int, int]:
    wk_j = 0 if len(ys) == 1 else [j for j in range(len(ys)) if j != road_i][0]
    wk_y = ys[wk_j] if ys else 0.0
    nbx = len(xb) - 1
    nwk = min(walkway_blocks, nbx)
    wi0 = max(0, (nbx - nwk) // 2 + (1 if nbx > 2 and nwk < nbx - 1 else 0))
    wi0 = min(wi0, nbx - nwk)
    walkway = {"x0": xb[wi0] + 6.0, "x1": xb[wi0 + nwk] - 6.0, "y": wk_y, "width": 5.2, "z": 3.0,
               "pillar_every": 4.0}
    return walkway, wk_j, wi0, nwk


# --- buildings ---------------------------------------------------------------------------------------
class _Buildings:
    """Collects buildings with running ids and door numbers."""

    def __init__(self):
        self.items, self.number = [], 1

    def add(self, boxes, style, height, repeated=False, face=None):
        self.items.append({"id": len(self.items), "number": self.number, "boxes": boxes, "height": float(height),
                           "style": style, "repeated": repeated, "face": face})
        self.number += 1


def _facing(rng, b, nbx, nby) -> str:
    """Which side faces a path (sign + door go there)."""
    cands = []
    if b["j"] > 0:
        cands.append("S")
    if b["j"] < nby - 1:
        cands.append("N")
    if b["i"] > 0:
        cands.append("W")
    if b["i"] < nbx - 1:
        cands.append("E")
    return cands[rng.integers(len(cands))] if cands else "S"


def _repeated_pair(out: _Buildings, box, south: bool, rep_style, rep_h) -> None:
    """Two identical buildings, same texture, same size, same offsets."""
    bx0, by0, bx1, by1 = box
    bw = bx1 - bx0
    gap, ww, dd = 5.0, 9.5, 12.0   # fixed size: every copy gets the very same facades
    cy = by0 + 2.0 + dd / 2 if south else by1 - 2.0 - dd / 2
    x_start = bx0 + max(0.0, (bw - 2 * ww - gap) / 2)
    for k in range(2 if bw >= 2 * ww + gap else 1):
        cx = x_start + ww / 2 + k * (ww + gap)
        out.add([[cx, cy, ww, dd, 0.0]], rep_style, rep_h, repeated=True, face="S" if south else "N")


def _single(out: _Buildings, rng, box, style, h, face) -> None:
    """One building filling most of the block, maybe rotated, maybe with an L wing."""
    bx0, by0, bx1, by1 = box
    bw, bh = bx1 - bx0, by1 - by0
    w_, d_ = bw * rng.uniform(0.6, 0.95), bh * rng.uniform(0.55, 0.9)
    cx, cy = bx0 + bw / 2 + rng.uniform(-1, 1) * (bw - w_) / 2, by0 + bh / 2 + rng.uniform(-1, 1) * (bh - d_) / 2
    ang = float(rng.choice([0.0, 0.0, 0.0, rng.uniform(-12, 12)]))
    boxes = [[cx, cy, w_, d_, ang]]
    room_lo, room_hi = (cy - d_ / 2) - by0, by1 - (cy + d_ / 2)
    if rng.random() < 0.4 and ang == 0.0 and max(room_lo, room_hi) > 4:  # L wing
        ww = w_ * rng.uniform(0.3, 0.5)
        ext = max(room_lo, room_hi) * rng.uniform(0.6, 0.95)
        wx = cx - w_ / 2 + ww / 2 if rng.random() < 0.5 else cx + w_ / 2 - ww / 2
        if room_hi >= room_lo:
            wy0, wy1 = cy + d_ / 2 - 1.0, cy + d_ / 2 + ext
        else:
            wy0, wy1 = cy - d_ / 2 - ext, cy - d_ / 2 + 1.0
        boxes.append([wx, (wy0 + wy1) / 2, ww, wy1 - wy0, 0.0])
    out.add(boxes, style, h, face=face)


def _side_by_side(out: _Buildings, rng, box, style, h, face) -> None:
    """Two buildings side by side along the longer axis of the block."""
    bx0, by0, bx1, by1 = box
    bw, bh = bx1 - bx0, by1 - by0
    if bw >= bh:
        ww = (bw - 5) / 2
        for k in range(2):
            st = style if k == 0 else T.facade_style(rng)
            hh = h if k == 0 else float(rng.uniform(7, 16))
            d_ = bh * rng.uniform(0.55, 0.9)
            out.add([[bx0 + ww / 2 + k * (ww + 5), by0 + bh / 2 + rng.uniform(-1, 1) * (bh - d_) / 2,
                      ww, d_, 0.0]], st, hh, face=face)
    else:
        dd = (bh - 5) / 2
        for k in range(2):
            st = style if k == 0 else T.facade_style(rng)
            hh = h if k == 0 else float(rng.uniform(7, 16))
            w_ = bw * rng.uniform(0.55, 0.9)
            out.add([[bx0 + bw / 2 + rng.uniform(-1, 1) * (bw - w_) / 2, by0 + dd / 2 + k * (dd + 5),
                      w_, dd, 0.0]], st, hh, face=face)


def _place_buildings(L: Layout, rng, preset: str) -> list:
    out = _Buildings()
    rep_style = T.facade_style(rng)
    rep_style["material"] = "render"
    rep_style["base"] = [205.0, 195.0, 175.0]
    rep_style["layout"] = "punched"
    rep_style["stripe"] = False
    rep_h = float(rng.uniform(11, 14))
    tall_left = 1 if preset == "tiny" else max(2, L.nbx * L.nby // 6)
    for b in L.blocks:
        bx0, by0, bx1, by1 = b["box"]
        bw, bh = bx1 - bx0, by1 - by0
        if bw < 6 or bh < 6:
            continue
        face = _facing(rng, b, L.nbx, L.nby)
        if b["type"] == "repeated":
            _repeated_pair(out, b["box"], L.rep_j > L.wk_j, rep_style, rep_h)
        elif b["type"] == "buildings":
            style = T.facade_style(rng)
            h = float(rng.uniform(7, 18))
            if tall_left > 0 and rng.random() < 0.35:
                h, tall_left = float(rng.uniform(24, 34)), tall_left - 1
            if rng.random() < 0.45 or bw < 18:
                _single(out, rng, b["box"], style, h, face)
            else:
                _side_by_side(out, rng, b["box"], style, h, face)
    return out.items


def make_layout(preset, rng) -> Layout:
    """Paths, blocks, walkway, block types and buildings of a campus ``preset`` (a ``world.Preset``)."""
    W, H = preset.width_m, preset.height_m
    x0, x1, y0, y1 = -W / 2, W / 2, -H / 2, H / 2
    xs = _grid_lines(rng, x0, x1, preset.block)
    ys = _grid_lines(rng, y0, y1, preset.block)
    road_i = len(ys) // 2 if len(ys) >= 3 else -1
    paths = _make_paths(xs, ys, road_i, x0, y0, x1, y1)
    xb, yb = [x0] + xs + [x1], [y0] + ys + [y1]
    walkway, wk_j, wi0, nwk = _walkway(xb, ys, road_i, preset.walkway_blocks)
    nby = len(yb) - 1
    rep_j = wk_j + 1 if wk_j + 1 < nby else wk_j  # block above the walkway line
    L = Layout(x0=x0, y0=y0, x1=x1, y1=y1, xb=xb, yb=yb, road_i=road_i, paths=paths,
               blocks=_make_blocks(xb, yb, road_i), walkway=walkway, wk_j=wk_j, rep_j=rep_j, buildings=[])
    _mark_special_blocks(L, rng, preset.name, wi0, nwk)
    L.buildings = _place_buildings(L, rng, preset.name)
    return L


def capture_paths(paths: list, capture_ring: bool) -> list:
    """Capture polylines: footpaths along the centre, the road along both sidewalks (walkway included)."""
    cap = []
    for p in paths:
        if p["name"].startswith("ring") and not capture_ring:
            continue
        a, b = np.asarray(p["pts"][0], float), np.asarray(p["pts"][1], float)
        d = (b - a) / np.linalg.norm(b - a)
        a, b = a + d * 7, b - d * 7  # stay on campus
        nrm = np.array([-d[1], d[0]])
        if p["kind"] == "road":
            for s in (-1, 1):
                off = nrm * s * (p["width"] / 2 + 1.1)
                cap.append({"pts": [list(a + off), list(b + off)], "kind": "sidewalk",
                            "name": p["name"] + ("s" if s < 0 else "n"), "width": 1.6})
        else:
            cap.append({"pts": [list(a), list(b)], "kind": "path", "name": p["name"], "width": p["width"] * 0.6})
    return cap
