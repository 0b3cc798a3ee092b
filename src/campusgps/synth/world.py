"""Procedural campus: layout (paths, blocks, buildings, walkway, trees, lamps), textures and world.json.

Coordinates are east/north metres in a :class:`campusgps.geo.LocalFrame` centred on the campus; the
origin's lat/lon is in ``world.json``. Buildings are unions of (possibly rotated) boxes whose walls become
vertical textured segments; trees, lamps, benches, people and cars are billboards.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from campusgps.synth import textures as T

WALL_PPM = 10.0      # facade texels per metre
GROUND_PPM = 8.0     # ground texels per metre
LIGHT_PPM = 2.0      # night light-map texels per metre
GROUND_MARGIN = 70.0  # ground texture extends this far beyond the campus
ATLAS_W = 4096
SPRITE_LEVELS = 4


@dataclass(frozen=True)
class Preset:
    name: str
    width_m: float
    height_m: float
    block: tuple  # (min, max) block size in metres
    photos: int   # target mapping photos
    queries: int  # target query photos
    walkway_blocks: int = 2
    capture_ring: bool = True  # also capture along the ring path around the campus


PRESETS = {
    "tiny": Preset("tiny", 80.0, 60.0, (30.0, 36.0), photos=40, queries=10, walkway_blocks=1,
                   capture_ring=False),
    "small": Preset("small", 200.0, 150.0, (34.0, 44.0), photos=2400, queries=300),
    "medium": Preset("medium", 420.0, 300.0, (30.0, 40.0), photos=10000, queries=1000, walkway_blocks=3),
}


def box_corners(cx, cy, w, d, angle_deg=0.0) -> np.ndarray:
    """Corners (4, 2), counter-clockwise, of a w (along the rotated x axis) by d box."""
    a = math.radians(angle_deg)
    ca, sa = math.cos(a), math.sin(a)
    loc = np.array([[-w / 2, -d / 2], [w / 2, -d / 2], [w / 2, d / 2], [-w / 2, d / 2]])
    rot = np.array([[ca, -sa], [sa, ca]])
    return loc @ rot.T + np.array([cx, cy])


@dataclass
class Sprite:
    img: list            # mip levels, RGBA uint8
    glow: list | None    # mip levels, uint8 (emissive at night) or None
    w_m: float
    h_m: float
    kind: str


@dataclass
class World:
    preset: str
    seed: int
    width_m: float
    height_m: float
    origin: tuple
    desc: dict                      # JSON-able description (world.json)
    seg: dict                       # arrays: x0 y0 x1 y1 zlo zhi nx ny ax ay len kind bid
    atlas: list                     # facade atlas mip levels (RGBA: A = emissive)
    ground: list                    # ground texture mip levels (RGB)
    ground_box: tuple               # (x0, y0, x1, y1) metres covered by the ground texture
    light: np.ndarray               # night light map uint8 (LIGHT_PPM)
    ceilings: list                  # dicts: cx cy len wid angle z tex(RGBA mips) ppm
    skies: dict                     # condition -> panorama RGB
    sprites: list                   # Sprite
    objects: dict                   # arrays: x y sprite
    people: list                    # sprite ids
    cars: list                      # sprite ids
    footprints: list                # (corners (4,2), height) for shadows / GPS
    paths: list                     # capture polylines: dicts {pts, kind, width, name}
    walkway: dict | None
    repeated_ids: list
    roads: list = field(default_factory=list)   # polylines where cars may park

    def frame(self):
        from campusgps.geo import LocalFrame
        return LocalFrame(lat0=self.origin[0], lon0=self.origin[1], alt0=self.origin[2])


# ------------------------------------------------------------------------------------------------------
def _sprite_mips(img: np.ndarray, glow: np.ndarray | None):
    levels, glows = [img], [glow] if glow is not None else None
    for _ in range(SPRITE_LEVELS - 1):
        if min(levels[-1].shape[:2]) < 8:
            break
        # premultiplied downsampling so transparent texels do not bleed dark fringes
        im = levels[-1].astype(np.float32)
        a = im[..., 3:4] / 255.0
        pm = np.concatenate([im[..., :3] * a, im[..., 3:4]], -1)
        d = cv2.resize(pm, (pm.shape[1] // 2, pm.shape[0] // 2), interpolation=cv2.INTER_AREA)
        aa = np.maximum(d[..., 3:4] / 255.0, 1e-3)
        out = np.concatenate([np.clip(d[..., :3] / aa, 0, 255), d[..., 3:4]], -1)
        levels.append(out.astype(np.uint8))
        if glows is not None:
            glows.append(cv2.resize(glows[-1], (levels[-1].shape[1], levels[-1].shape[0]), interpolation=cv2.INTER_AREA))
    return levels, glows


class _Atlas:
    """Shelf packer for facade textures (RGBA)."""

    def __init__(self):
        self.rows = []       # list of (y, height, x_cursor)
        self.items = []      # (x, y, img)
        self.h = 0

    def add(self, rgb: np.ndarray, emis: np.ndarray) -> tuple[int, int]:
        h, w = rgb.shape[:2]
        pad = 4
        if w + 2 * pad > ATLAS_W:
            raise ValueError("facade wider than the atlas")
        for i, (ry, rh, rx) in enumerate(self.rows):
            if h + 2 * pad <= rh and rx + w + 2 * pad <= ATLAS_W:
                self.rows[i] = (ry, rh, rx + w + 2 * pad)
                self.items.append((rx + pad, ry + pad, rgb, emis))
                return rx + pad, ry + pad
        ry = self.h
        self.rows.append((ry, h + 2 * pad, w + 2 * pad))
        self.h += h + 2 * pad
        self.items.append((pad, ry + pad, rgb, emis))
        return pad, ry + pad

    def build(self) -> list:
        H = max(8, int(math.ceil(self.h / 8) * 8))
        atlas = np.zeros((H, ATLAS_W, 4), np.uint8)
        atlas[..., :3] = 128
        for x, y, rgb, emis in self.items:
            h, w = rgb.shape[:2]
            # replicate borders into the padding so bilinear/mip lookups at edges stay clean
            blk = cv2.copyMakeBorder(np.dstack([rgb, emis]), 3, 3, 3, 3, cv2.BORDER_REPLICATE)
            atlas[y - 3:y + h + 3, x - 3:x + w + 3] = blk
        levels = [atlas]
        for _ in range(2):
            levels.append(cv2.pyrDown(levels[-1]))
        return levels


# ------------------------------------------------------------------------------------------------------
def build_world(preset: str = "tiny", seed: int = 0, origin=(31.2620, 34.8010, 280.0)) -> World:
    """Generate the campus for (preset, seed). Deterministic."""
    if preset not in PRESETS:
        raise KeyError(preset)
    P = PRESETS[preset]
    rng = np.random.default_rng([seed, 7001])
    W, H = P.width_m, P.height_m
    x0, x1, y0, y1 = -W / 2, W / 2, -H / 2, H / 2

    # --- path grid ------------------------------------------------------------------------------
    def lines(lo, hi):
        out, pos = [], lo
        while True:
            pos += rng.uniform(*P.block)
            if pos > hi - P.block[0] * 0.8:
                break
            out.append(float(pos))
        # centre the grid
        if out:
            shift = ((hi - out[-1]) - (out[0] - lo)) / 2
            out = [v + shift for v in out]
        return out

    xs, ys = lines(x0, x1), lines(y0, y1)
    road_i = len(ys) // 2 if len(ys) >= 3 else -1
    paths = []  # ground/capture description
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

    def half_w(kind):
        return 3.5 + 2.2 if kind == "road" else 2.0

    # blocks between lines; each bounded by the half widths of adjacent paths + set-back
    xb = [x0] + xs + [x1]
    yb = [y0] + ys + [y1]
    blocks = []
    for i in range(len(xb) - 1):
        for j in range(len(yb) - 1):
            sb = 3.0
            bx0 = xb[i] + 2.0 + sb
            bx1 = xb[i + 1] - 2.0 - sb
            hy_lo = half_w("road") if (j - 1) == road_i else 2.0
            hy_hi = half_w("road") if j == road_i else 2.0
            by0 = yb[j] + hy_lo + sb
            by1 = yb[j + 1] - hy_hi - sb
            blocks.append({"i": i, "j": j, "box": [bx0, by0, bx1, by1], "type": "buildings"})
    nbx, nby = len(xb) - 1, len(yb) - 1

    def block(i, j):
        return blocks[i * nby + j]

    # --- special areas: walkway, repeated facades, plazas, lawns -----------------------------------
    wk_j = 0 if len(ys) == 1 else [j for j in range(len(ys)) if j != road_i][0]
    wk_y = ys[wk_j] if ys else 0.0
    nwk = min(P.walkway_blocks, nbx)
    wi0 = max(0, (nbx - nwk) // 2 + (1 if nbx > 2 and nwk < nbx - 1 else 0))
    wi0 = min(wi0, nbx - nwk)
    wk_x0 = xb[wi0] + 6.0
    wk_x1 = xb[wi0 + nwk] - 6.0
    walkway = {"x0": wk_x0, "x1": wk_x1, "y": wk_y, "width": 5.2, "z": 3.0, "pillar_every": 4.0}

    # repeated facades: the block row on the other side of the walkway path, nwk blocks wide if possible
    rep_j = wk_j + 1 if wk_j + 1 < nby else wk_j  # block above the walkway line
    rep_blocks = [(i, rep_j) for i in range(nbx) if abs(i - (wi0 + (nwk - 1) / 2)) <= max(0.5, nwk / 2 - 0.5) + 0.01]
    for i, j in rep_blocks:
        block(i, j)["type"] = "repeated"
    # identical copies far away elsewhere on campus (the confusions that hurt most: same look, 100 m apart)
    n_copies = {"tiny": 0, "small": 2, "medium": 4}.get(preset, 2)
    rc = np.mean([[xb[i] + xb[i + 1], yb[j] + yb[j + 1]] for i, j in rep_blocks], 0) / 2
    cands = sorted(((float(np.hypot((xb[b["i"]] + xb[b["i"] + 1]) / 2 - rc[0], (yb[b["j"]] + yb[b["j"] + 1]) / 2 - rc[1])), k)
                    for k, b in enumerate(blocks) if b["type"] == "buildings" and b["j"] != rep_j), reverse=True)
    chosen = []
    for dist, k in cands:
        if len(chosen) >= n_copies:
            break
        c = np.array([(xb[blocks[k]["i"]] + xb[blocks[k]["i"] + 1]) / 2, (yb[blocks[k]["j"]] + yb[blocks[k]["j"] + 1]) / 2])
        if all(np.hypot(*(c - cc)) > 60 for cc in chosen) and dist > 50:
            chosen.append(c)
            blocks[k]["type"] = "repeated"
    free = [(i, j) for i in range(nbx) for j in range(nby) if block(i, j)["type"] == "buildings"]
    order = rng.permutation(len(free))
    n_plaza = 1 if preset == "tiny" else max(2, len(free) // 8)
    n_lawn = 0 if preset == "tiny" else max(1, len(free) // 10)
    for k, idx in enumerate(order[:n_plaza + n_lawn]):
        block(*free[idx])["type"] = "plaza" if k < n_plaza else "lawn"

    # --- buildings ---------------------------------------------------------------------------------
    buildings = []
    rep_style = T.facade_style(rng)
    rep_style["material"] = "render"
    rep_style["base"] = [205.0, 195.0, 175.0]
    rep_style["layout"] = "punched"
    rep_style["stripe"] = False
    rep_h = float(rng.uniform(11, 14))
    number = 1
    tall_left = 1 if preset == "tiny" else max(2, nbx * nby // 6)

    def add_building(boxes, style, height, repeated=False, face=None):
        nonlocal number
        buildings.append({"id": len(buildings), "number": number, "boxes": boxes, "height": float(height),
                          "style": style, "repeated": repeated, "face": face})
        number += 1

    for b in blocks:
        bx0, by0, bx1, by1 = b["box"]
        bw, bh = bx1 - bx0, by1 - by0
        if bw < 6 or bh < 6:
            continue
        # which side faces a path (sign + door go there)
        cands = []
        if b["j"] > 0:
            cands.append("S")
        if b["j"] < nby - 1:
            cands.append("N")
        if b["i"] > 0:
            cands.append("W")
        if b["i"] < nbx - 1:
            cands.append("E")
        face = cands[rng.integers(len(cands))] if cands else "S"
        if b["type"] == "repeated":
            # two identical buildings, same texture, same size, same offsets
            gap, ww, dd = 5.0, 9.5, 12.0   # fixed size: every copy gets the very same facades
            cy = by0 + 2.0 + dd / 2 if rep_j > wk_j else by1 - 2.0 - dd / 2
            x_start = bx0 + max(0.0, (bw - 2 * ww - gap) / 2)
            for k in range(2 if bw >= 2 * ww + gap else 1):
                cx = x_start + ww / 2 + k * (ww + gap)
                add_building([[cx, cy, ww, dd, 0.0]], rep_style, rep_h, repeated=True,
                             face="S" if rep_j > wk_j else "N")
        elif b["type"] == "buildings":
            style = T.facade_style(rng)
            h = float(rng.uniform(7, 18))
            if tall_left > 0 and rng.random() < 0.35:
                h, tall_left = float(rng.uniform(24, 34)), tall_left - 1
            r = rng.random()
            if r < 0.45 or bw < 18:
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
                add_building(boxes, style, h, face=face)
            else:  # two buildings side by side along the longer axis
                if bw >= bh:
                    ww = (bw - 5) / 2
                    for k in range(2):
                        st = style if k == 0 else T.facade_style(rng)
                        hh = h if k == 0 else float(rng.uniform(7, 16))
                        d_ = bh * rng.uniform(0.55, 0.9)
                        add_building([[bx0 + ww / 2 + k * (ww + 5), by0 + bh / 2 + rng.uniform(-1, 1) * (bh - d_) / 2,
                                       ww, d_, 0.0]], st, hh, face=face)
                else:
                    dd = (bh - 5) / 2
                    for k in range(2):
                        st = style if k == 0 else T.facade_style(rng)
                        hh = h if k == 0 else float(rng.uniform(7, 16))
                        w_ = bw * rng.uniform(0.55, 0.9)
                        add_building([[bx0 + bw / 2 + rng.uniform(-1, 1) * (bw - w_) / 2, by0 + dd / 2 + k * (dd + 5),
                                       w_, dd, 0.0]], st, hh, face=face)

    # --- trees, lamps, benches, landmarks ------------------------------------------------------------
    fps = []
    for bd in buildings:
        for bx in bd["boxes"]:
            fps.append((box_corners(*bx), bd["height"]))

    def in_building(x, y, pad=1.0):
        for c, _ in fps:
            mn, mx = c.min(0) - pad, c.max(0) + pad
            if mn[0] <= x <= mx[0] and mn[1] <= y <= mx[1]:
                # rotated boxes: use polygon test
                if cv2.pointPolygonTest(c.astype(np.float32), (float(x), float(y)), True) > -pad:
                    return True
        return False

    def on_path(x, y, pad=0.8):
        for p in paths:
            (ax, ay), (bx_, by_) = p["pts"]
            hw = p["width"] / 2 + (2.2 if p["kind"] == "road" else 0) + pad
            if ay == by_ and abs(y - ay) < hw and min(ax, bx_) <= x <= max(ax, bx_):
                return True
            if ax == bx_ and abs(x - ax) < hw and min(ay, by_) <= y <= max(ay, by_):
                return True
        return False

    def under_walkway(x, y, pad=0.5):
        return walkway["x0"] - pad <= x <= walkway["x1"] + pad and abs(y - walkway["y"]) <= walkway["width"] / 2 + pad

    trees, lamps, benches, bins, landmarks = [], [], [], [], []
    n_tree_kinds = 10
    plazas = []
    for b in blocks:
        bx0, by0, bx1, by1 = b["box"]
        if b["type"] == "plaza":
            plazas.append([bx0 - 2, by0 - 2, bx1 + 2, by1 + 2])
            step = rng.uniform(7, 10)
            for gx in np.arange(bx0 + 3, bx1 - 2, step):
                for gy in np.arange(by0 + 3, by1 - 2, step):
                    if rng.random() < 0.7:
                        trees.append([float(gx), float(gy), int(rng.integers(n_tree_kinds))])
            for _ in range(int(rng.integers(3, 7))):
                benches.append([float(rng.uniform(bx0 + 2, bx1 - 2)), float(rng.uniform(by0 + 2, by1 - 2))])
            landmarks.append({"x": (bx0 + bx1) / 2 + rng.uniform(-3, 3), "y": (by0 + by1) / 2 + rng.uniform(-3, 3),
                              "w": float(rng.uniform(1.5, 3)), "h": float(rng.uniform(2.5, 5)),
                              "color": [float(c) for c in T.ACCENTS[rng.integers(6)]]})
        elif b["type"] == "lawn":
            for _ in range(int((bx1 - bx0) * (by1 - by0) / 60)):
                x, y = rng.uniform(bx0, bx1), rng.uniform(by0, by1)
                trees.append([float(x), float(y), int(rng.integers(n_tree_kinds))])
        else:
            for _ in range(int((bx1 - bx0) * (by1 - by0) / 220)):
                x, y = rng.uniform(bx0, bx1), rng.uniform(by0, by1)
                if not in_building(x, y, 2.5):
                    trees.append([float(x), float(y), int(rng.integers(n_tree_kinds))])
    # avenue trees and lamps along paths
    for p in paths:
        (ax, ay), (bx_, by_) = p["pts"]
        horiz = ay == by_
        L = abs(bx_ - ax) if horiz else abs(by_ - ay)
        off = p["width"] / 2 + (2.2 if p["kind"] == "road" else 0) + 1.0
        side = 1 if rng.random() < 0.5 else -1
        tree_step = rng.uniform(9, 14)
        avenue = rng.random() < 0.7
        for t in np.arange(rng.uniform(2, 8), L, tree_step):
            x, y = (min(ax, bx_) + t, ay + side * (off + 0.8)) if horiz else (ax + side * (off + 0.8), min(ay, by_) + t)
            if avenue and not in_building(x, y, 2.0) and not on_path(x, y, 0.3) and not under_walkway(x, y, 1.5):
                trees.append([float(x), float(y), int(rng.integers(n_tree_kinds))])
        lamp_step = rng.uniform(16, 24)
        for t in np.arange(rng.uniform(3, 10), L, lamp_step):
            x, y = (min(ax, bx_) + t, ay - side * off) if horiz else (ax - side * off, min(ay, by_) + t)
            if not in_building(x, y, 0.5) and not on_path(x, y, 0.0) and not under_walkway(x, y, 1.0):
                lamps.append([float(x), float(y)])
            if rng.random() < 0.25:
                xb_, yb_ = (x + 3, y) if horiz else (x, y + 3)
                if not in_building(xb_, yb_, 0.5) and not on_path(xb_, yb_, 0.0):
                    (benches if rng.random() < 0.6 else bins).append([float(xb_), float(yb_)])
    # a ring of trees around the campus so the horizon is not empty
    for t in np.arange(0, 2 * (W + H), 9.0):
        if t < W:
            x, y = x0 + t, y0 - 9
        elif t < W + H:
            x, y = x1 + 9, y0 + (t - W)
        elif t < 2 * W + H:
            x, y = x1 - (t - W - H), y1 + 9
        else:
            x, y = x0 - 9, y1 - (t - 2 * W - H)
        trees.append([float(x + rng.uniform(-3, 3)), float(y + rng.uniform(-3, 3)), int(rng.integers(n_tree_kinds))])
    trees = [t for t in trees if not on_path(t[0], t[1], 0.3) and not under_walkway(t[0], t[1], 1.5)]

    # --- sprites ------------------------------------------------------------------------------------
    srng = np.random.default_rng([seed, 7002])
    sprites: list[Sprite] = []

    def add_sprite(img, wm, hm, kind, glow=None):
        lv, gl = _sprite_mips(img, glow)
        sprites.append(Sprite(lv, gl, wm, hm, kind))
        return len(sprites) - 1

    kinds = ["round", "round", "round", "conifer", "round", "shrub", "palm", "round", "conifer", "round"]
    tree_ids = [add_sprite(*T.tree_sprite(srng, kinds[k]), "tree") for k in range(n_tree_kinds)]
    limg, lglow, lw, lh = T.lamp_sprite()
    lamp_id = add_sprite(limg, lw, lh, "lamp", lglow)
    bench_id = add_sprite(*T.bench_sprite(srng), "bench")
    bin_id = add_sprite(*T.bin_sprite(), "bin")
    people = [add_sprite(*T.person_sprite(srng), "person") for _ in range(8)]
    cars = [add_sprite(*T.car_sprite(srng), "car") for _ in range(6)]
    ox, oy, osp = [], [], []
    for x, y, k in trees:
        ox.append(x), oy.append(y), osp.append(tree_ids[k])
    for x, y in lamps:
        ox.append(x), oy.append(y), osp.append(lamp_id)
    for x, y in benches:
        ox.append(x), oy.append(y), osp.append(bench_id)
    for x, y in bins:
        ox.append(x), oy.append(y), osp.append(bin_id)
    objects = {"x": np.array(ox, np.float64), "y": np.array(oy, np.float64), "sprite": np.array(osp, np.int32)}

    # --- facade atlas + wall segments --------------------------------------------------------------
    trng = np.random.default_rng([seed, 7003])
    atlas = _Atlas()
    segs = {k: [] for k in ("x0", "y0", "x1", "y1", "zlo", "zhi", "ax", "ay", "kind", "bid")}

    def add_seg(p0, p1, zlo, zhi, ax, ay, kind, bid):
        for k, v in zip(("x0", "y0", "x1", "y1", "zlo", "zhi", "ax", "ay", "kind", "bid"),
                        (p0[0], p0[1], p1[0], p1[1], zlo, zhi, ax, ay, kind, bid)):
            segs[k].append(v)

    face_dir = {"S": (0, -1), "N": (0, 1), "W": (-1, 0), "E": (1, 0)}
    rep_cache = {}
    for bd in buildings:
        st = bd["style"]
        for bi, bx in enumerate(bd["boxes"]):
            c = box_corners(*bx)
            for e in range(4):
                p0, p1 = c[e], c[(e + 1) % 4]
                L = float(np.hypot(*(p1 - p0)))
                n = np.array([p1[1] - p0[1], -(p1[0] - p0[0])]) / max(L, 1e-9)
                fd = face_dir.get(bd["face"] or "S")
                main = bi == 0 and float(n @ np.array(fd)) > 0.7
                key = (round(L, 2), e, main)
                if bd["repeated"] and key in rep_cache:
                    ax, ay = rep_cache[key]
                else:
                    frng = np.random.default_rng([st["seed"], e, int(main)]) if bd["repeated"] else trng
                    sign = None if not main else (f"{bd['number']}" if not bd["repeated"] else "R")
                    rgb, em = T.make_facade(frng, st, L, bd["height"], WALL_PPM, door=main, sign=sign,
                                            sign_big=not bd["repeated"])
                    ax, ay = atlas.add(rgb, em)
                    if bd["repeated"]:
                        rep_cache[key] = (ax, ay)
                add_seg(p0, p1, 0.0, bd["height"], ax, ay, 0, bd["id"])
    # landmarks (coloured sculptures on plazas)
    for lm in landmarks:
        c = box_corners(lm["x"], lm["y"], lm["w"], lm["w"], 0.0)
        img = np.zeros((int(lm["h"] * WALL_PPM), int(lm["w"] * WALL_PPM), 3), np.uint8)
        img[:] = np.clip(np.array(lm["color"]) + trng.normal(0, 6, img.shape), 0, 255)
        img[::6] = (np.asarray(lm["color"]) * 0.6).astype(np.uint8)
        ax, ay = atlas.add(img, np.zeros(img.shape[:2], np.uint8))
        for e in range(4):
            add_seg(c[e], c[(e + 1) % 4], 0.0, lm["h"], ax, ay, 3, -1)
        fps.append((c, lm["h"]))
    # walkway: fascia band + pillars on both sides (identical all along: deliberately ambiguous)
    ceilings = []
    if walkway["x1"] - walkway["x0"] > 6:
        wz, wwid = walkway["z"], walkway["width"]
        Lw = walkway["x1"] - walkway["x0"]
        band = np.zeros((int(0.5 * WALL_PPM), int(Lw * WALL_PPM), 3), np.uint8)
        band[:] = (225, 225, 220)
        band[-2:] = (120, 120, 120)
        em = np.zeros(band.shape[:2], np.uint8)
        bax, bay = atlas.add(band, em)
        endband = band[:, :int(wwid * WALL_PPM)].copy()
        eax, eay = atlas.add(endband, em[:, :endband.shape[1]])
        c = box_corners((walkway["x0"] + walkway["x1"]) / 2, walkway["y"], Lw, wwid, 0.0)
        for e in range(4):
            if e % 2 == 0:
                add_seg(c[e], c[(e + 1) % 4], wz, wz + 0.5, bax, bay, 2, -2)
            else:
                add_seg(c[e], c[(e + 1) % 4], wz, wz + 0.5, eax, eay, 2, -2)
        pil = np.zeros((int(wz * WALL_PPM), int(0.3 * WALL_PPM), 3), np.uint8)
        pil[:] = (200, 200, 195)
        pil[:, 0] = (170, 170, 165)
        pax, pay = atlas.add(pil, np.zeros(pil.shape[:2], np.uint8))
        for xp in np.arange(walkway["x0"] + 0.5, walkway["x1"] - 0.3, walkway["pillar_every"]):
            for side in (-1, 1):
                pc = box_corners(xp, walkway["y"] + side * (wwid / 2 - 0.3), 0.3, 0.3, 0.0)
                for e in range(4):
                    add_seg(pc[e], pc[(e + 1) % 4], 0.0, wz, pax, pay, 1, -2)
        # ceiling: slatted with light fixtures every pillar bay
        cppm = 10.0
        tex = np.zeros((int(wwid * cppm), int(Lw * cppm), 4), np.uint8)
        tex[..., :3] = (170, 165, 155)
        tex[::5, :, :3] = (130, 125, 118)
        for xp in np.arange(walkway["pillar_every"] / 2, Lw, walkway["pillar_every"]):
            x = int(xp * cppm)
            cv2.rectangle(tex, (x - 4, int(wwid * cppm / 2) - 3), (x + 4, int(wwid * cppm / 2) + 3), (240, 240, 230, 255), -1)
        mips = [tex, cv2.pyrDown(tex), cv2.pyrDown(cv2.pyrDown(tex))]
        ceilings.append({"cx": (walkway["x0"] + walkway["x1"]) / 2, "cy": walkway["y"], "len": Lw, "wid": wwid,
                         "angle": 0.0, "z": wz, "tex": mips, "ppm": cppm})
        fps.append((c, 1.0))  # the roof itself (GPS multipath) is handled by under_walkway
        fps.pop()
    seg = {k: np.asarray(v, np.float64) for k, v in segs.items()}
    seg["kind"] = seg["kind"].astype(np.int32)
    seg["bid"] = seg["bid"].astype(np.int32)
    dx, dy = seg["x1"] - seg["x0"], seg["y1"] - seg["y0"]
    seg["len"] = np.hypot(dx, dy)
    seg["nx"], seg["ny"] = dy / seg["len"], -dx / seg["len"]

    # --- ground texture ---------------------------------------------------------------------------
    grng = np.random.default_rng([seed, 7004])
    gx0, gy0, gx1, gy1 = x0 - GROUND_MARGIN, y0 - GROUND_MARGIN, x1 + GROUND_MARGIN, y1 + GROUND_MARGIN
    gw, gh = int((gx1 - gx0) * GROUND_PPM), int((gy1 - gy0) * GROUND_PPM)

    def P_(pts):
        pts = np.asarray(pts, np.float64)
        return np.stack([(pts[:, 0] - gx0) * GROUND_PPM, (gy1 - pts[:, 1]) * GROUND_PPM], -1).round().astype(np.int32)

    n1 = T.value_noise(grng, gh, gw, cell=GROUND_PPM * 6, octaves=4)
    n2 = T.value_noise(grng, gh, gw, cell=GROUND_PPM * 0.8, octaves=2)
    grass = np.empty((gh, gw, 3), np.float32)
    grass[:] = (85, 125, 55)
    grass += n1[..., None] * np.array([25, 22, 12], np.float32) + n2[..., None] * 14
    grass += grng.normal(0, 9, (gh, gw, 1)).astype(np.float32)
    g = grass
    del grass
    # aprons around buildings
    for c, _ in fps:
        cen = c.mean(0)
        big = cen + (c - cen) * (1 + 3.0 / max(1.0, np.linalg.norm(c[0] - cen)))
        cv2.fillPoly(g, [P_(big)], (150, 145, 135))
    # plazas: large warm pavers
    pav_n = grng.normal(0, 6, (gh, gw, 1)).astype(np.float32)
    for k, (px0, py0, px1, py1) in enumerate(plazas):
        col = T.PALETTE["render"][k % len(T.PALETTE["render"])]
        cv2.fillPoly(g, [P_([[px0, py0], [px1, py0], [px1, py1], [px0, py1]])], tuple(float(v) * 0.8 for v in col))
        q = P_([[px0, py1], [px1, py0]])
        sx, sy = max(0, q[0, 0]), max(0, q[0, 1])
        ex, ey = min(gw, q[1, 0]), min(gh, q[1, 1])
        step = int(GROUND_PPM * (1.0 + 0.5 * (k % 2)))
        sub = g[sy:ey, sx:ex]
        sub[(np.arange(sub.shape[0]) % step) == 0] *= 0.7
        sub[:, (np.arange(sub.shape[1]) % step) == 0] *= 0.7
    # paths and road
    for p in paths:
        a, b = np.asarray(p["pts"][0]), np.asarray(p["pts"][1])
        d = (b - a) / np.linalg.norm(b - a)
        nrm = np.array([-d[1], d[0]])
        if p["kind"] == "road":
            sw = p["width"] / 2 + 2.2
            cv2.fillPoly(g, [P_([a + nrm * sw, b + nrm * sw, b - nrm * sw, a - nrm * sw])], (175, 170, 160))
            hw = p["width"] / 2
            cv2.fillPoly(g, [P_([a + nrm * hw, b + nrm * hw, b - nrm * hw, a - nrm * hw])], (70, 72, 75))
            for t in np.arange(0, np.linalg.norm(b - a), 6.0):
                q0, q1 = a + d * t, a + d * (t + 3.0)
                cv2.line(g, tuple(P_([q0])[0]), tuple(P_([q1])[0]), (235, 235, 225), max(1, int(0.15 * GROUND_PPM)))
            for s in (-1, 1):
                cv2.line(g, tuple(P_([a + s * nrm * hw])[0]), tuple(P_([b + s * nrm * hw])[0]), (210, 210, 205),
                         max(1, int(0.25 * GROUND_PPM)))
        else:
            hw = p["width"] / 2
            cv2.fillPoly(g, [P_([a + nrm * hw, b + nrm * hw, b - nrm * hw, a - nrm * hw])], (185, 178, 165))
            for s in (-1, 1):
                cv2.line(g, tuple(P_([a + s * nrm * hw])[0]), tuple(P_([b + s * nrm * hw])[0]), (140, 138, 130),
                         max(1, int(0.2 * GROUND_PPM)))
    # paver joints on light paths + noise everywhere
    light = (g.mean(-1) > 140)
    jx = (np.arange(gw) % int(GROUND_PPM * 0.6) == 0)[None, :]
    jy = (np.arange(gh) % int(GROUND_PPM * 0.6) == 0)[:, None]
    joint = light & (jx | jy)
    g[joint] *= 0.85
    g += pav_n * 0.7 + n1[..., None] * 6
    # walkway floor: distinctive dark tiles
    cv2.fillPoly(g, [P_(box_corners((walkway["x0"] + walkway["x1"]) / 2, walkway["y"],
                                    walkway["x1"] - walkway["x0"], walkway["width"]))], (125, 110, 100))
    # flower beds and manholes for local detail
    for _ in range(int(W * H / 500)):
        x, y = grng.uniform(x0, x1), grng.uniform(y0, y1)
        if in_building(x, y, 1.0):
            continue
        if on_path(x, y, 0.0):
            cv2.circle(g, tuple(P_([[x, y]])[0]), int(0.35 * GROUND_PPM), (95, 95, 95), -1)
        else:
            col = [(200, 40, 60), (230, 190, 40), (150, 60, 160), (230, 120, 40), (240, 240, 230)][grng.integers(5)]
            cv2.ellipse(g, tuple(P_([[x, y]])[0]), (int(grng.uniform(1, 3) * GROUND_PPM), int(grng.uniform(0.6, 1.5) * GROUND_PPM)),
                        float(grng.uniform(0, 180)), 0, 360, tuple(0.5 * np.array(col) + 30), -1)
    ground0 = np.clip(g, 0, 255).astype(np.uint8)
    del g
    ground = [ground0, cv2.pyrDown(ground0)]
    ground.append(cv2.pyrDown(ground[-1]))
    ground.append(cv2.pyrDown(ground[-1]))

    # --- night light map ----------------------------------------------------------------------------
    lw_, lh_ = int((gx1 - gx0) * LIGHT_PPM), int((gy1 - gy0) * LIGHT_PPM)
    lm_ = np.zeros((lh_, lw_), np.float32)
    for x, y in lamps:
        cv2.circle(lm_, (int((x - gx0) * LIGHT_PPM), int((gy1 - y) * LIGHT_PPM)), int(5 * LIGHT_PPM), 1.0, -1)
    if walkway["x1"] - walkway["x0"] > 6:
        for xp in np.arange(walkway["x0"] + walkway["pillar_every"] / 2, walkway["x1"], walkway["pillar_every"]):
            cv2.circle(lm_, (int((xp - gx0) * LIGHT_PPM), int((gy1 - walkway["y"]) * LIGHT_PPM)), int(2.5 * LIGHT_PPM), 0.8, -1)
    lm_ = cv2.GaussianBlur(lm_, (0, 0), 2.5 * LIGHT_PPM)
    light = np.clip(lm_ * 400, 0, 255).astype(np.uint8)

    skies = {c: T.make_sky(np.random.default_rng([seed, 7005, i]), c)
             for i, c in enumerate(("day", "overcast", "dusk", "night"))}

    # capture polylines: footpaths along the centre, road along both sidewalks; walkway included
    cap = []
    for p in paths:
        if p["name"].startswith("ring") and not P.capture_ring:
            continue
        a, b = np.asarray(p["pts"][0], float), np.asarray(p["pts"][1], float)
        d = (b - a) / np.linalg.norm(b - a)
        a, b = a + d * 7, b - d * 7  # stay on campus
        nrm = np.array([-d[1], d[0]])
        if p["kind"] == "road":
            for s in (-1, 1):
                off = nrm * s * (p["width"] / 2 + 1.1)
                cap.append({"pts": [list(a + off), list(b + off)], "kind": "sidewalk", "name": p["name"] + ("s" if s < 0 else "n"),
                            "width": 1.6})
        else:
            cap.append({"pts": [list(a), list(b)], "kind": "path", "name": p["name"], "width": p["width"] * 0.6})
    roads = [p for p in paths if p["kind"] == "road"]

    desc = {
        "version": 1, "preset": preset, "seed": int(seed),
        "frame": {"lat0": origin[0], "lon0": origin[1], "alt0": origin[2]},
        "size_m": [W, H], "units": "east/north metres in the local frame (LocalFrame aeqd at lat0/lon0)",
        "paths": paths, "capture_paths": cap,
        "buildings": [{"id": b["id"], "number": b["number"], "height_m": b["height"], "repeated": b["repeated"],
                       "boxes": [{"cx": bx[0], "cy": bx[1], "w": bx[2], "d": bx[3], "angle_deg": bx[4],
                                  "corners": box_corners(*bx).round(3).tolist()} for bx in b["boxes"]],
                       "style": {k: v for k, v in b["style"].items()}} for b in buildings],
        "walkway": walkway, "repeated_building_ids": [b["id"] for b in buildings if b["repeated"]],
        "plazas": plazas, "landmarks": landmarks,
        "trees": [[round(t[0], 2), round(t[1], 2), kinds[t[2]]] for t in trees],
        "lamps": [[round(x, 2), round(y, 2)] for x, y in lamps],
        "benches": [[round(x, 2), round(y, 2)] for x, y in benches],
        "bins": [[round(x, 2), round(y, 2)] for x, y in bins],
        "blocks": [{"i": b["i"], "j": b["j"], "type": b["type"], "box": [round(v, 2) for v in b["box"]]} for b in blocks],
    }
    return World(preset=preset, seed=int(seed), width_m=W, height_m=H, origin=tuple(origin), desc=desc, seg=seg,
                 atlas=atlas.build(), ground=ground, ground_box=(gx0, gy0, gx1, gy1), light=light, ceilings=ceilings,
                 skies=skies, sprites=sprites, objects=objects, people=people, cars=cars,
                 footprints=[(c, h) for c, h in fps], paths=cap, walkway=walkway if walkway["x1"] - walkway["x0"] > 6 else None,
                 repeated_ids=[b["id"] for b in buildings if b["repeated"]], roads=roads)
