"""Vertical geometry: wall segments of buildings, landmarks and the covered walkway, their textures packed
into one facade atlas, and the walkway ceiling. The renderer intersects rays with ``seg`` arrays
(x0 y0 x1 y1 zlo zhi nx ny ax ay len kind bid) and samples ``atlas`` at (ax, ay).

Segment kinds: 0 building wall, 1 walkway pillar, 2 walkway fascia, 3 landmark.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from campusgps.synth import textures as T
from campusgps.synth.layout import box_corners

WALL_PPM = 10.0      # facade texels per metre
ATLAS_W = 4096
_SEG_KEYS = ("x0", "y0", "x1", "y1", "zlo", "zhi", "ax", "ay", "kind", "bid")


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


class _Walls:
    """Wall segments being collected, and the atlas their textures go into."""

    def __init__(self):
        self.atlas = _Atlas()
        self.segs = {k: [] for k in _SEG_KEYS}

    def add(self, p0, p1, zlo, zhi, ax, ay, kind, bid):
        for k, v in zip(_SEG_KEYS, (p0[0], p0[1], p1[0], p1[1], zlo, zhi, ax, ay, kind, bid)):
            self.segs[k].append(v)

    def add_box(self, corners, zlo, zhi, ax, ay, kind, bid):
        for e in range(4):
            self.add(corners[e], corners[(e + 1) % 4], zlo, zhi, ax, ay, kind, bid)

    def arrays(self) -> dict:
        seg = {k: np.asarray(v, np.float64) for k, v in self.segs.items()}
        seg["kind"] = seg["kind"].astype(np.int32)
        seg["bid"] = seg["bid"].astype(np.int32)
        dx, dy = seg["x1"] - seg["x0"], seg["y1"] - seg["y0"]
        seg["len"] = np.hypot(dx, dy)
        seg["nx"], seg["ny"] = dy / seg["len"], -dx / seg["len"]
        return seg


_FACE_DIR = {"S": (0, -1), "N": (0, 1), "W": (-1, 0), "E": (1, 0)}


def _building_walls(walls: _Walls, buildings: list, trng) -> None:
    """Every edge of every box becomes a textured wall; repeated buildings share one texture per edge."""
    rep_cache = {}
    for bd in buildings:
        st = bd["style"]
        for bi, bx in enumerate(bd["boxes"]):
            c = box_corners(*bx)
            for e in range(4):
                p0, p1 = c[e], c[(e + 1) % 4]
                length = float(np.hypot(*(p1 - p0)))
                n = np.array([p1[1] - p0[1], -(p1[0] - p0[0])]) / max(length, 1e-9)
                fd = _FACE_DIR.get(bd["face"] or "S")
                main = bi == 0 and float(n @ np.array(fd)) > 0.7
                key = (round(length, 2), e, main)
                if bd["repeated"] and key in rep_cache:
                    ax, ay = rep_cache[key]
                else:
                    frng = np.random.default_rng([st["seed"], e, int(main)]) if bd["repeated"] else trng
                    sign = None if not main else (f"{bd['number']}" if not bd["repeated"] else "R")
                    rgb, em = T.make_facade(frng, st, length, bd["height"], WALL_PPM, door=main, sign=sign,
                                            sign_big=not bd["repeated"])
                    ax, ay = walls.atlas.add(rgb, em)
                    if bd["repeated"]:
                        rep_cache[key] = (ax, ay)
                walls.add(p0, p1, 0.0, bd["height"], ax, ay, 0, bd["id"])


def _landmark_walls(walls: _Walls, landmarks: list, trng, footprints: list) -> None:
    """Coloured sculptures on plazas (their footprints join ``footprints``: shadows, GPS, ground aprons)."""
    for lm in landmarks:
        c = box_corners(lm["x"], lm["y"], lm["w"], lm["w"], 0.0)
        img = np.zeros((int(lm["h"] * WALL_PPM), int(lm["w"] * WALL_PPM), 3), np.uint8)
        img[:] = np.clip(np.array(lm["color"]) + trng.normal(0, 6, img.shape), 0, 255)
        img[::6] = (np.asarray(lm["color"]) * 0.6).astype(np.uint8)
        ax, ay = walls.atlas.add(img, np.zeros(img.shape[:2], np.uint8))
        walls.add_box(c, 0.0, lm["h"], ax, ay, 3, -1)
        footprints.append((c, lm["h"]))


def _walkway_ceiling(walkway: dict, length: float) -> dict:
    """Slatted ceiling with a light fixture in every pillar bay."""
    wz, wwid = walkway["z"], walkway["width"]
    cppm = 10.0
    tex = np.zeros((int(wwid * cppm), int(length * cppm), 4), np.uint8)
    tex[..., :3] = (170, 165, 155)
    tex[::5, :, :3] = (130, 125, 118)
    for xp in np.arange(walkway["pillar_every"] / 2, length, walkway["pillar_every"]):
        x = int(xp * cppm)
        cv2.rectangle(tex, (x - 4, int(wwid * cppm / 2) - 3), (x + 4, int(wwid * cppm / 2) + 3),
                      (240, 240, 230, 255), -1)
    mips = [tex, cv2.pyrDown(tex), cv2.pyrDown(cv2.pyrDown(tex))]
    return {"cx": (walkway["x0"] + walkway["x1"]) / 2, "cy": walkway["y"], "len": length, "wid": wwid,
            "angle": 0.0, "z": wz, "tex": mips, "ppm": cppm}


def _walkway_walls(walls: _Walls, walkway: dict) -> dict:
    """Fascia band + pillars on both sides (identical all along: deliberately ambiguous); -> ceiling."""
    wz, wwid = walkway["z"], walkway["width"]
    length = walkway["x1"] - walkway["x0"]
    band = np.zeros((int(0.5 * WALL_PPM), int(length * WALL_PPM), 3), np.uint8)
    band[:] = (225, 225, 220)
    band[-2:] = (120, 120, 120)
    em = np.zeros(band.shape[:2], np.uint8)
    bax, bay = walls.atlas.add(band, em)
    endband = band[:, :int(wwid * WALL_PPM)].copy()
    eax, eay = walls.atlas.add(endband, em[:, :endband.shape[1]])
    c = box_corners((walkway["x0"] + walkway["x1"]) / 2, walkway["y"], length, wwid, 0.0)
    for e in range(4):
        if e % 2 == 0:
            walls.add(c[e], c[(e + 1) % 4], wz, wz + 0.5, bax, bay, 2, -2)
        else:
            walls.add(c[e], c[(e + 1) % 4], wz, wz + 0.5, eax, eay, 2, -2)
    pil = np.zeros((int(wz * WALL_PPM), int(0.3 * WALL_PPM), 3), np.uint8)
    pil[:] = (200, 200, 195)
    pil[:, 0] = (170, 170, 165)
    pax, pay = walls.atlas.add(pil, np.zeros(pil.shape[:2], np.uint8))
    for xp in np.arange(walkway["x0"] + 0.5, walkway["x1"] - 0.3, walkway["pillar_every"]):
        for side in (-1, 1):
            pc = box_corners(xp, walkway["y"] + side * (wwid / 2 - 0.3), 0.3, 0.3, 0.0)
            walls.add_box(pc, 0.0, wz, pax, pay, 1, -2)
    return _walkway_ceiling(walkway, length)


def build_walls(trng, buildings: list, landmarks: list, walkway: dict | None, footprints: list):
    """-> (seg arrays, atlas mip levels, ceilings). Appends landmark footprints to ``footprints``."""
    walls = _Walls()
    _building_walls(walls, buildings, trng)
    _landmark_walls(walls, landmarks, trng, footprints)
    ceilings = [_walkway_walls(walls, walkway)] if walkway is not None else []
    return walls.arrays(), walls.atlas.build(), ceilings
