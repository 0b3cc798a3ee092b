"""Street furniture and vegetation: where trees, lamps, benches, bins, plazas and landmarks go, and the
billboard sprites (mip-mapped RGBA, optional night glow) that draw them, people and cars.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from campusgps.synth import textures as T
from campusgps.synth.layout import Layout, Site

SPRITE_LEVELS = 4
N_TREE_KINDS = 10
TREE_KINDS = ["round", "round", "round", "conifer", "round", "shrub", "palm", "round", "conifer", "round"]


@dataclass
class Sprite:
    img: list            # mip levels, RGBA uint8
    glow: list | None    # mip levels, uint8 (emissive at night) or None
    w_m: float
    h_m: float
    kind: str


@dataclass
class Props:
    trees: list = field(default_factory=list)      # [x, y, kind index]
    lamps: list = field(default_factory=list)      # [x, y]
    benches: list = field(default_factory=list)
    bins: list = field(default_factory=list)
    landmarks: list = field(default_factory=list)  # dicts {x, y, w, h, color}
    plazas: list = field(default_factory=list)     # [x0, y0, x1, y1]


# --- placement ---------------------------------------------------------------------------------------
def _block_props(P: Props, L: Layout, site: Site, rng) -> None:
    for b in L.blocks:
        bx0, by0, bx1, by1 = b["box"]
        if b["type"] == "plaza":
            P.plazas.append([bx0 - 2, by0 - 2, bx1 + 2, by1 + 2])
            step = rng.uniform(7, 10)
            for gx in np.arange(bx0 + 3, bx1 - 2, step):
                for gy in np.arange(by0 + 3, by1 - 2, step):
                    if rng.random() < 0.7:
                        P.trees.append([float(gx), float(gy), int(rng.integers(N_TREE_KINDS))])
            for _ in range(int(rng.integers(3, 7))):
                P.benches.append([float(rng.uniform(bx0 + 2, bx1 - 2)), float(rng.uniform(by0 + 2, by1 - 2))])
            P.landmarks.append({"x": (bx0 + bx1) / 2 + rng.uniform(-3, 3), "y": (by0 + by1) / 2 + rng.uniform(-3, 3),
                                "w": float(rng.uniform(1.5, 3)), "h": float(rng.uniform(2.5, 5)),
                                "color": [float(c) for c in T.ACCENTS[rng.integers(6)]]})
        elif b["type"] == "lawn":
            for _ in range(int((bx1 - bx0) * (by1 - by0) / 60)):
                x, y = rng.uniform(bx0, bx1), rng.uniform(by0, by1)
                P.trees.append([float(x), float(y), int(rng.integers(N_TREE_KINDS))])
        else:
            for _ in range(int((bx1 - bx0) * (by1 - by0) / 220)):
                x, y = rng.uniform(bx0, bx1), rng.uniform(by0, by1)
                if not site.in_building(x, y, 2.5):
                    P.trees.append([float(x), float(y), int(rng.integers(N_TREE_KINDS))])


def _avenue_props(P: Props, L: Layout, site: Site, rng) -> None:
    """Avenue trees and lamps along paths, a bench or bin beside some lamps."""
    for p in L.paths:
        (ax, ay), (bx_, by_) = p["pts"]
        horiz = ay == by_
        length = abs(bx_ - ax) if horiz else abs(by_ - ay)
        off = p["width"] / 2 + (2.2 if p["kind"] == "road" else 0) + 1.0
        side = 1 if rng.random() < 0.5 else -1
        tree_step = rng.uniform(9, 14)
        avenue = rng.random() < 0.7
        for t in np.arange(rng.uniform(2, 8), length, tree_step):
            x, y = (min(ax, bx_) + t, ay + side * (off + 0.8)) if horiz else (ax + side * (off + 0.8), min(ay, by_) + t)
            if avenue and not site.in_building(x, y, 2.0) and not site.on_path(x, y, 0.3) \
                    and not site.under_walkway(x, y, 1.5):
                P.trees.append([float(x), float(y), int(rng.integers(N_TREE_KINDS))])
        lamp_step = rng.uniform(16, 24)
        for t in np.arange(rng.uniform(3, 10), length, lamp_step):
            x, y = (min(ax, bx_) + t, ay - side * off) if horiz else (ax - side * off, min(ay, by_) + t)
            if not site.in_building(x, y, 0.5) and not site.on_path(x, y, 0.0) and not site.under_walkway(x, y, 1.0):
                P.lamps.append([float(x), float(y)])
            if rng.random() < 0.25:
                xb_, yb_ = (x + 3, y) if horiz else (x, y + 3)
                if not site.in_building(xb_, yb_, 0.5) and not site.on_path(xb_, yb_, 0.0):
                    (P.benches if rng.random() < 0.6 else P.bins).append([float(xb_), float(yb_)])


def _ring_trees(P: Props, L: Layout, rng) -> None:
    """A ring of trees around the campus so the horizon is not empty."""
    x0, y0, x1, y1 = L.x0, L.y0, L.x1, L.y1
    W, H = x1 - x0, y1 - y0
    for t in np.arange(0, 2 * (W + H), 9.0):
        if t < W:
            x, y = x0 + t, y0 - 9
        elif t < W + H:
            x, y = x1 + 9, y0 + (t - W)
        elif t < 2 * W + H:
            x, y = x1 - (t - W - H), y1 + 9
        else:
            x, y = x0 - 9, y1 - (t - 2 * W - H)
        P.trees.append([float(x + rng.uniform(-3, 3)), float(y + rng.uniform(-3, 3)), int(rng.integers(N_TREE_KINDS))])


def place_props(L: Layout, site: Site, rng) -> Props:
    """Trees, lamps, benches, bins, plazas and landmarks (continues the layout's random stream)."""
    P = Props()
    _block_props(P, L, site, rng)
    _avenue_props(P, L, site, rng)
    _ring_trees(P, L, rng)
    P.trees = [t for t in P.trees if not site.on_path(t[0], t[1], 0.3) and not site.under_walkway(t[0], t[1], 1.5)]
    return P


# --- sprites -----------------------------------------------------------------------------------------
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
            glows.append(cv2.resize(glows[-1], (levels[-1].shape[1], levels[-1].shape[0]),
                                    interpolation=cv2.INTER_AREA))
    return levels, glows


def make_sprites(srng, P: Props, tree_seed: int | None = None) -> tuple[list, dict, list, list]:
    """-> (sprites, objects {x, y, sprite} of the placed props, people sprite ids, car sprite ids).

    ``tree_seed`` None: one billboard per tree kind, shared by every tree of that kind (synth version 1);
    else every tree gets its own billboard of its kind (own shape, colour and leaf texture)."""
    sprites: list[Sprite] = []

    def add_sprite(img, wm, hm, kind, glow=None):
        lv, gl = _sprite_mips(img, glow)
        sprites.append(Sprite(lv, gl, wm, hm, kind))
        return len(sprites) - 1

    tree_ids = [add_sprite(*T.tree_sprite(srng, TREE_KINDS[k]), "tree") for k in range(N_TREE_KINDS)]
    limg, lglow, lw, lh = T.lamp_sprite()
    lamp_id = add_sprite(limg, lw, lh, "lamp", lglow)
    bench_id = add_sprite(*T.bench_sprite(srng), "bench")
    bin_id = add_sprite(*T.bin_sprite(), "bin")
    people = [add_sprite(*T.person_sprite(srng), "person") for _ in range(8)]
    cars = [add_sprite(*T.car_sprite(srng), "car") for _ in range(6)]
    ox, oy, osp = [], [], []
    if tree_seed is not None:  # after the shared sprites: the other props' sprites stay those of version 1
        own = [add_sprite(*T.tree_sprite(np.random.default_rng([tree_seed, 7006, t]), TREE_KINDS[k]), "tree")
               for t, (_, _, k) in enumerate(P.trees)]
    for items, ids in ((P.trees, None), (P.lamps, lamp_id), (P.benches, bench_id), (P.bins, bin_id)):
        for t, it in enumerate(items):
            ox.append(it[0])
            oy.append(it[1])
            osp.append(ids if ids is not None else (own[t] if tree_seed is not None else tree_ids[it[2]]))
    objects = {"x": np.array(ox, np.float64), "y": np.array(oy, np.float64), "sprite": np.array(osp, np.int32)}
    return sprites, objects, people, cars
