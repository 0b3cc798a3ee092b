"""Procedural textures: noise, facades, ground, sky panoramas and billboard sprites.

Everything is drawn with numpy + OpenCV into uint8 arrays from a ``numpy.random.Generator`` so the
same seed gives the same pixels. Colours are RGB.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

# --- noise -------------------------------------------------------------------------------------------


def value_noise(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3,
                persistence: float = 0.5) -> np.ndarray:
    """Smooth multi-octave value noise in [-1, 1] (float32, shape (h, w)); ``cell`` = feature size in px."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
        g = rng.uniform(-1, 1, size=(gh, gw)).astype(np.float32)
        big = cv2.resize(g, (int((gw - 1) * cell) + 1, int((gh - 1) * cell) + 1), interpolation=cv2.INTER_CUBIC)
        out += amp * big[:h, :w] if big.shape[0] >= h and big.shape[1] >= w else \
            amp * cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= persistence
        cell = max(1.0, cell / 2)
    return np.clip(out / total * 1.6, -1, 1)


def _col(c) -> tuple:
    return tuple(int(max(0, min(255, v))) for v in c)


def _jitter(rng, c, amt=12):
    return np.clip(np.asarray(c, np.float32) + rng.uniform(-amt, amt, 3), 0, 255)


# --- facades -----------------------------------------------------------------------------------------
MATERIALS = ("brick", "concrete", "render", "glass", "wood", "stone")
PALETTE = {
    "brick": [(150, 70, 55), (120, 60, 50), (170, 95, 70), (105, 55, 45), (160, 120, 90)],
    "concrete": [(165, 165, 160), (140, 140, 138), (185, 180, 170), (120, 122, 125)],
    "render": [(225, 215, 190), (210, 190, 150), (235, 230, 220), (200, 160, 130), (170, 190, 200),
               (215, 200, 120), (190, 120, 100), (150, 170, 140)],
    "glass": [(70, 100, 120), (60, 85, 95), (90, 115, 110), (50, 70, 90)],
    "wood": [(140, 100, 65), (115, 80, 50), (165, 125, 85)],
    "stone": [(190, 180, 160), (170, 160, 145), (205, 195, 175)],
}
ACCENTS = [(200, 40, 40), (30, 90, 170), (240, 180, 30), (30, 130, 80), (230, 110, 30), (120, 50, 140),
           (20, 20, 20), (240, 240, 240)]


def facade_style(rng: np.random.Generator) -> dict:
    """A random but coherent facade description (JSON-able)."""
    mat = str(rng.choice(MATERIALS, p=[0.22, 0.2, 0.26, 0.12, 0.08, 0.12]))
    base = [float(x) for x in _jitter(rng, PALETTE[mat][rng.integers(len(PALETTE[mat]))], 10)]
    floor_h = float(rng.uniform(3.1, 4.0))
    layout = str(rng.choice(["punched", "ribbon", "tall", "curtain"] if mat == "glass" else
                            ["punched", "punched", "ribbon", "tall"]))
    return {
        "material": mat,
        "base": base,
        "trim": [float(x) for x in _jitter(rng, rng.choice([(235, 235, 230), (60, 60, 65), (200, 190, 170),
                                                            (110, 110, 115)]), 8)],
        "accent": [float(x) for x in ACCENTS[rng.integers(len(ACCENTS))]],
        "glass": [float(x) for x in _jitter(rng, rng.choice([(45, 60, 80), (70, 95, 115), (40, 50, 55),
                                                             (90, 110, 120)]), 8)],
        "floor_h": floor_h,
        "layout": layout,
        "win_w": float(rng.uniform(1.0, 2.2)),
        "win_h": float(rng.uniform(1.3, 2.1)) if layout != "tall" else float(rng.uniform(2.3, 2.8)),
        "bay": float(rng.uniform(2.4, 4.2)),
        "band": bool(rng.random() < 0.5),
        "stripe": bool(rng.random() < 0.35),
        "canopy": bool(rng.random() < 0.4),
        "lit": float(rng.uniform(0.25, 0.7)),
        "seed": int(rng.integers(1 << 30)),
    }


def _material_pattern(rng, h, w, ppm, style) -> np.ndarray:
    base = np.asarray(style["base"], np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    n = value_noise(rng, h, w, cell=max(4, ppm * 3), octaves=3)[..., None]
    mat = style["material"]
    if mat == "brick":
        img += n * 14 + rng.normal(0, 7, (h, w, 1)).astype(np.float32)
        bh = max(2, int(round(ppm * 0.25)))
        mortar = np.asarray(style["trim"], np.float32) * 0.3 + base * 0.7 + 25
        img[::bh] = mortar
        for r in range(0, h, bh):
            off = (bh * 2) if (r // bh) % 2 else 0
            img[r:r + bh, off::bh * 4] = mortar
    elif mat == "concrete":
        img += n * 10 + rng.normal(0, 4, (h, w, 1)).astype(np.float32)
        ps = max(4, int(round(ppm * 1.5)))
        img[::ps] *= 0.8
        img[:, ::max(4, int(ppm * 3))] *= 0.82
    elif mat == "render":
        img += n * 9 + rng.normal(0, 3, (h, w, 1)).astype(np.float32)
    elif mat == "glass":
        grad = np.linspace(1.25, 0.85, h, dtype=np.float32)[:, None, None]
        img = img * grad + n * 18
        step = max(3, int(ppm * 1.5))
        img[:, ::step] = np.asarray(style["trim"], np.float32) * 0.6
    elif mat == "wood":
        s = max(2, int(ppm * 0.3))
        stripes = (np.arange(w) // s % 2).astype(np.float32)[None, :, None]
        img += n * 12 + stripes * 10 + rng.normal(0, 5, (h, 1, 1)).astype(np.float32)
    elif mat == "stone":
        img += n * 12 + rng.normal(0, 6, (h, w, 1)).astype(np.float32)
        bh = max(3, int(ppm * 0.6))
        img[::bh] *= 0.78
        for r in range(0, h, bh):
            off = int(rng.integers(0, bh * 3))
            img[r:r + bh, off::bh * 3] *= 0.8
    return img


def _door(img, emis, style: dict, ppm: float, cx: float, trim, glass, sign: str | None, sign_big: bool) -> None:
    """Entrance centred at column ``cx``: frame, glass door (lit at night), optional canopy and number sign."""
    h, w = img.shape[:2]
    dw, dh = 1.8 * ppm, 2.5 * ppm
    x0, x1 = int(cx - dw / 2), int(cx + dw / 2)
    cv2.rectangle(img, (x0 - int(0.2 * ppm), int(h - dh - 0.2 * ppm)), (x1 + int(0.2 * ppm), h - 1), trim, -1)
    cv2.rectangle(img, (x0, int(h - dh)), (x1, h - 1), _col(glass * 0.7), -1)
    cv2.line(img, ((x0 + x1) // 2, int(h - dh)), ((x0 + x1) // 2, h - 1), trim, max(1, int(ppm * 0.1)))
    emis[int(h - dh):h, x0:x1] = 200
    if style["canopy"]:
        cv2.rectangle(img, (x0 - int(0.8 * ppm), int(h - dh - 0.6 * ppm)), (x1 + int(0.8 * ppm), int(h - dh - 0.2 * ppm)),
                      _col(style["accent"]), -1)
    if sign:
        sc = (1.6 if sign_big else 0.6)
        sw, sh = int(sc * ppm * (0.7 * len(sign) + 0.6)), int(sc * ppm * 1.1)
        sx0 = int(min(w - sw - 1, x1 + 0.6 * ppm))
        sy0 = int(h - dh - 0.2 * ppm - sh)
        if sx0 > 0 and sy0 > 0:
            cv2.rectangle(img, (sx0, sy0), (sx0 + sw, sy0 + sh), _col(style["accent"]), -1)
            cv2.putText(img, sign, (sx0 + int(0.25 * sc * ppm), sy0 + int(0.85 * sh)), cv2.FONT_HERSHEY_SIMPLEX,
                        sc * ppm / 28.0, (255, 255, 255) if np.mean(style["accent"]) < 150 else (20, 20, 20),
                        max(1, int(sc * ppm / 10)), cv2.LINE_AA)
            emis[sy0:sy0 + sh, sx0:sx0 + sw] = np.maximum(emis[sy0:sy0 + sh, sx0:sx0 + sw], 90)


def make_facade(rng: np.random.Generator, style: dict, width_m: float, height_m: float, ppm: float,
                door: bool = False, sign: str | None = None, sign_big: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One wall face: RGB uint8 (h, w, 3) and an emissive mask uint8 (h, w) (lit windows at night).

    Row 0 is the top of the wall; column 0 is the wall's start corner.
    """
    w = max(4, int(round(width_m * ppm)))
    h = max(4, int(round(height_m * ppm)))
    img = _material_pattern(rng, h, w, ppm, style)
    emis = np.zeros((h, w), np.uint8)
    glass = np.asarray(style["glass"], np.float32)
    trim = _col(style["trim"])
    fh = style["floor_h"]
    nfloors = max(1, int(height_m // fh))
    bay = style["bay"]
    nb = max(1, int(width_m // bay))
    margin = (width_m - nb * bay) / 2
    layout = style["layout"]
    lit_p = style["lit"]
    door_bay = nb // 2 if door else -1

    def window(x0, y0, x1, y1, lit):
        x0, y0, x1, y1 = (int(round(v)) for v in (x0, y0, x1, y1))
        x0, x1 = max(0, x0), min(w, x1)
        y0, y1 = max(0, y0), min(h, y1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        fr = max(1, int(ppm * 0.12))
        img[y0:y1, x0:x1] = trim
        gy = np.linspace(1.35, 0.65, y1 - y0 - 2 * fr, dtype=np.float32)[:, None, None] if y1 - y0 > 2 * fr else 1
        img[y0 + fr:y1 - fr, x0 + fr:x1 - fr] = glass * gy
        if lit:
            emis[y0 + fr:y1 - fr, x0 + fr:x1 - fr] = int(rng.integers(150, 256))
        if x1 - x0 > ppm * 1.2:  # mullion
            xm = (x0 + x1) // 2
            img[y0:y1, xm - fr // 2:xm + fr // 2 + 1] = trim

    if layout == "curtain":
        for i in range(nfloors):
            y0 = h - (i + 1) * fh * ppm
            img[int(max(0, y0)):int(h - i * fh * ppm)] = glass * 1.0
            cv2.rectangle(img, (0, int(y0)), (w - 1, int(y0 + 0.35 * ppm)), _col(style["trim"]), -1)
            lit_row = rng.random(nb + 1) < lit_p
            for b in range(nb + 1):
                x = int((margin + b * bay) * ppm)
                cv2.line(img, (x, int(y0)), (x, int(y0 + fh * ppm)), _col(style["trim"]), max(1, int(ppm * 0.15)))
                if lit_row[b] and i > 0:
                    emis[int(max(0, y0 + 0.4 * ppm)):int(max(0, y0 + fh * ppm)), max(0, x):min(w, x + int(bay * ppm))] = \
                        int(rng.integers(140, 240))
        img += value_noise(rng, h, w, cell=ppm * 6, octaves=2)[..., None] * 25
    else:
        for i in range(nfloors):
            ybot = h - i * fh * ppm
            ymid = ybot - fh * ppm * 0.45
            if layout == "ribbon":
                y0, y1 = ymid - style["win_h"] / 2 * ppm, ymid + style["win_h"] / 2 * ppm
                for b in range(nb):
                    if i == 0 and b == door_bay:
                        continue
                    x0 = (margin + b * bay) * ppm
                    window(x0, y0, x0 + bay * ppm + 1, y1, rng.random() < lit_p)
            else:
                for b in range(nb):
                    if i == 0 and b == door_bay:
                        continue
                    cx = (margin + (b + 0.5) * bay) * ppm
                    ww, wh = style["win_w"] * ppm, style["win_h"] * ppm
                    window(cx - ww / 2, ymid - wh / 2, cx + ww / 2, ymid + wh / 2, rng.random() < lit_p)
            if style["band"] and i > 0:
                cv2.rectangle(img, (0, int(ybot - 0.25 * ppm)), (w - 1, int(ybot)), _col(style["trim"]), -1)
    # ground-floor plinth and top cornice
    cv2.rectangle(img, (0, int(h - 0.5 * ppm)), (w - 1, h - 1), _col(np.asarray(style["base"]) * 0.55), -1)
    cv2.rectangle(img, (0, 0), (w - 1, int(0.45 * ppm)), _col(style["trim"]), -1)
    if style["stripe"] and w > 3 * ppm:
        xs = int(rng.uniform(0.05, 0.85) * w)
        cv2.rectangle(img, (xs, int(0.45 * ppm)), (xs + int(0.8 * ppm), h - int(0.5 * ppm)), _col(style["accent"]), -1)
    img *= np.linspace(1.0, 0.9, h, dtype=np.float32)[:, None, None]  # weathering towards the ground
    img = np.clip(img, 0, 255).astype(np.uint8)
    if door:
        cx = (margin + (door_bay + 0.5) * bay) * ppm if nb > 0 else w / 2
        _door(img, emis, style, ppm, cx, trim, glass, sign, sign_big)
    return img, emis


# --- sky ---------------------------------------------------------------------------------------------
SKY_W, SKY_H = 1024, 320          # azimuth 0..360 over width; elevation from SKY_EL_MAX (row 0) down to SKY_EL_MIN
SKY_EL_MIN, SKY_EL_MAX = -6.0, 74.0


def make_sky(rng: np.random.Generator, condition: str) -> np.ndarray:
    """Equirectangular sky panorama with a distant tree/hill line near the horizon (RGB uint8)."""
    el = np.linspace(SKY_EL_MAX, SKY_EL_MIN, SKY_H, dtype=np.float32)[:, None]
    t = np.clip(el / SKY_EL_MAX, 0, 1)
    if condition == "day":
        top, hor = np.array([60, 120, 215], np.float32), np.array([190, 215, 240], np.float32)
    elif condition == "overcast":
        top, hor = np.array([150, 155, 165], np.float32), np.array([200, 202, 205], np.float32)
    elif condition == "dusk":
        top, hor = np.array([60, 60, 120], np.float32), np.array([250, 150, 80], np.float32)
    else:
        top, hor = np.array([5, 8, 20], np.float32), np.array([25, 28, 45], np.float32)
    g = t ** 0.6
    sky = (hor * (1 - g[..., None]) + top * g[..., None]) * np.ones((1, SKY_W, 1), np.float32)
    cloud = value_noise(rng, SKY_H, SKY_W, cell=90, octaves=4)
    if condition == "day":
        c = np.clip(cloud * 1.6 - 0.35, 0, 1)[..., None] * (t[..., None] > 0.03)
        sky = sky * (1 - 0.85 * c) + 245 * 0.85 * c
    elif condition == "overcast":
        sky += cloud[..., None] * 22
    elif condition == "dusk":
        c = np.clip(cloud * 1.5 - 0.4, 0, 1)[..., None]
        sky = sky * (1 - 0.6 * c) + np.array([170, 90, 110], np.float32) * 0.6 * c
    else:
        stars = (rng.random((SKY_H, SKY_W)) < 0.002) & (t > 0.15)
        sky[stars] = 170
    # distant skyline: tree line and hills (identical in every condition up to light)
    srng = np.random.default_rng(12345)
    hill = 1.2 + 2.0 * (value_noise(srng, 1, SKY_W, cell=120, octaves=2)[0] + 1) + \
        1.5 * np.clip(value_noise(srng, 1, SKY_W, cell=8, octaves=2)[0], 0, 1)
    rows = (SKY_EL_MAX - hill) / (SKY_EL_MAX - SKY_EL_MIN) * (SKY_H - 1)
    r = np.arange(SKY_H, dtype=np.float32)[:, None]
    mask = r >= rows[None, :]
    tree_col = {"day": (70, 95, 70), "overcast": (95, 110, 100), "dusk": (50, 45, 60), "night": (8, 10, 14)}[condition]
    sky[mask] = np.array(tree_col, np.float32) + (value_noise(srng, SKY_H, SKY_W, cell=4, octaves=1)[mask][:, None] * 10)
    return np.clip(sky, 0, 255).astype(np.uint8)


# --- sprites -----------------------------------------------------------------------------------------


def _blank(h, w):
    return np.zeros((h, w, 4), np.uint8)


def tree_sprite(rng: np.random.Generator, kind: str, ppm: float = 24) -> tuple[np.ndarray, float, float]:
    """RGBA billboard of a tree; returns (image, width_m, height_m)."""
    if kind == "conifer":
        hm, wm = rng.uniform(7, 12), rng.uniform(3.5, 5)
    elif kind == "palm":
        hm, wm = rng.uniform(8, 12), rng.uniform(4, 6)
    elif kind == "shrub":
        hm, wm = rng.uniform(1.0, 1.8), rng.uniform(1.5, 3)
    else:
        hm, wm = rng.uniform(6, 11), rng.uniform(5, 9)
    h, w = int(hm * ppm), int(wm * ppm)
    img = _blank(h, w)
    green = _jitter(rng, [(60, 110, 50), (80, 125, 45), (45, 90, 55), (95, 120, 60), (120, 110, 50)][rng.integers(5)], 10)
    trunk = _col(_jitter(rng, (90, 70, 50), 10))
    if kind == "conifer":
        cv2.rectangle(img, (w // 2 - int(0.15 * ppm), h - int(1.5 * ppm)), (w // 2 + int(0.15 * ppm), h - 1), trunk + (255,), -1)
        for k in range(6):
            y0 = int(h * (0.05 + k * 0.13))
            y1 = int(min(h - 1.2 * ppm, y0 + h * 0.3))
            half = int(w * (0.18 + 0.08 * k))
            pts = np.array([[w // 2, y0], [w // 2 - half, y1], [w // 2 + half, y1]], np.int32)
            cv2.fillPoly(img, [pts], _col(green * rng.uniform(0.75, 1.05)) + (255,))
    elif kind == "palm":
        cv2.line(img, (w // 2, h - 1), (w // 2 + int(rng.uniform(-0.5, 0.5) * ppm), int(0.15 * h)), trunk + (255,),
                 max(2, int(0.3 * ppm)))
        top = (w // 2, int(0.15 * h))
        for a in np.linspace(0, 2 * np.pi, 9)[:-1] + rng.uniform(0, 0.5):
            end = (int(top[0] + math.cos(a) * w * 0.48), int(top[1] + abs(math.sin(a)) * h * 0.18 + math.sin(a) * h * 0.05))
            cv2.line(img, top, end, _col(green * rng.uniform(0.7, 1.0)) + (255,), max(2, int(0.35 * ppm)))
    else:
        if kind != "shrub":
            th = int(h * 0.4)
            cv2.rectangle(img, (w // 2 - int(0.2 * ppm), h - th), (w // 2 + int(0.2 * ppm), h - 1), trunk + (255,), -1)
            cy, ry = int(h * 0.38), int(h * 0.36)
        else:
            cy, ry = int(h * 0.55), int(h * 0.45)
        for _ in range(26 if kind != "shrub" else 10):
            bx = int(w / 2 + rng.normal(0, w * 0.18))
            by = int(cy + rng.normal(0, ry * 0.45))
            br = int(rng.uniform(0.18, 0.3) * min(w, 2 * ry))
            shade = 0.7 + 0.5 * (1 - (by - (cy - ry)) / (2 * ry + 1))
            cv2.circle(img, (bx, by), br, _col(green * shade * rng.uniform(0.85, 1.1)) + (255,), -1)
    # leaf texture
    a = img[..., 3] > 0
    n = rng.normal(0, 14, (h, w, 1))
    img[..., :3] = np.where(a[..., None], np.clip(img[..., :3] + n, 0, 255), 0).astype(np.uint8)
    return img, float(wm), float(hm)


def lamp_sprite(ppm: float = 24) -> tuple[np.ndarray, np.ndarray, float, float]:
    hm, wm = 4.5, 1.0
    h, w = int(hm * ppm), int(wm * ppm)
    img = _blank(h, w)
    glow = np.zeros((h, w), np.uint8)
    cv2.rectangle(img, (w // 2 - 2, int(0.4 * ppm)), (w // 2 + 2, h - 1), (50, 55, 60, 255), -1)
    cv2.rectangle(img, (w // 2 - int(0.35 * ppm), 0), (w // 2 + int(0.35 * ppm), int(0.45 * ppm)), (230, 230, 210, 255), -1)
    glow[0:int(0.45 * ppm), w // 2 - int(0.35 * ppm):w // 2 + int(0.35 * ppm)] = 255
    return img, glow, wm, hm


def bench_sprite(rng, ppm: float = 24) -> tuple[np.ndarray, float, float]:
    hm, wm = 0.9, 1.8
    h, w = int(hm * ppm), int(wm * ppm)
    img = _blank(h, w)
    wood = _col(_jitter(rng, (140, 95, 55), 15))
    cv2.rectangle(img, (0, int(0.1 * h)), (w - 1, int(0.35 * h)), wood + (255,), -1)
    cv2.rectangle(img, (0, int(0.5 * h)), (w - 1, int(0.62 * h)), wood + (255,), -1)
    for x in (int(0.1 * w), int(0.85 * w)):
        cv2.rectangle(img, (x, int(0.3 * h)), (x + 3, h - 1), (40, 40, 40, 255), -1)
    return img, wm, hm


def person_sprite(rng, ppm: float = 40) -> tuple[np.ndarray, float, float]:
    hm = float(rng.uniform(1.55, 1.9))
    wm = 0.6
    h, w = int(hm * ppm), int(wm * ppm)
    img = _blank(h, w)
    skin = _col(_jitter(rng, [(230, 190, 160), (200, 150, 110), (140, 100, 70), (90, 60, 45)][rng.integers(4)], 8))
    shirt = _col(rng.uniform(20, 235, 3))
    pants = _col(rng.uniform(20, 120, 3))
    cx = w // 2
    cv2.circle(img, (cx, int(0.07 * h)), int(0.065 * h), skin + (255,), -1)
    cv2.rectangle(img, (cx - int(0.38 * w), int(0.14 * h)), (cx + int(0.38 * w), int(0.52 * h)), shirt + (255,), -1)
    cv2.rectangle(img, (cx - int(0.3 * w), int(0.5 * h)), (cx - 1, h - 1), pants + (255,), -1)
    cv2.rectangle(img, (cx + 1, int(0.5 * h)), (cx + int(0.3 * w), h - 1), pants + (255,), -1)
    if rng.random() < 0.4:  # backpack / bag
        cv2.rectangle(img, (cx + int(0.25 * w), int(0.2 * h)), (w - 1, int(0.45 * h)), _col(rng.uniform(10, 200, 3)) + (255,), -1)
    return img, wm, hm


def car_sprite(rng, ppm: float = 30) -> tuple[np.ndarray, float, float]:
    wm, hm = float(rng.uniform(4.0, 4.8)), float(rng.uniform(1.4, 1.8))
    h, w = int(hm * ppm), int(wm * ppm)
    img = _blank(h, w)
    body = _col(rng.choice([(200, 30, 30), (230, 230, 230), (30, 30, 35), (40, 70, 150), (150, 150, 155), (200, 170, 40)]))
    cv2.rectangle(img, (0, int(0.4 * h)), (w - 1, int(0.85 * h)), body + (255,), -1)
    pts = np.array([[int(0.2 * w), int(0.42 * h)], [int(0.32 * w), int(0.05 * h)], [int(0.75 * w), int(0.05 * h)],
                    [int(0.88 * w), int(0.42 * h)]], np.int32)
    cv2.fillPoly(img, [pts], body + (255,))
    pts2 = np.array([[int(0.26 * w), int(0.4 * h)], [int(0.35 * w), int(0.12 * h)], [int(0.72 * w), int(0.12 * h)],
                     [int(0.82 * w), int(0.4 * h)]], np.int32)
    cv2.fillPoly(img, [pts2], (60, 80, 100, 255))
    for x in (int(0.2 * w), int(0.8 * w)):
        cv2.circle(img, (x, int(0.82 * h)), int(0.18 * h), (20, 20, 20, 255), -1)
        cv2.circle(img, (x, int(0.82 * h)), int(0.08 * h), (150, 150, 150, 255), -1)
    return img, wm, hm


def bin_sprite(ppm: float = 30) -> tuple[np.ndarray, float, float]:
    wm, hm = 0.6, 1.0
    h, w = int(hm * ppm), int(wm * ppm)
    img = _blank(h, w)
    cv2.rectangle(img, (0, 2), (w - 1, h - 1), (40, 90, 60, 255), -1)
    cv2.rectangle(img, (0, 0), (w - 1, 4), (30, 30, 30, 255), -1)
    return img, wm, hm
