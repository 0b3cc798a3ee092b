"""The ground (z = 0): one mip-mapped texture of grass, building aprons, plaza pavers, paths, the road,
walkway tiles, flower beds and manholes, and the night light map of lamps and walkway fixtures.
Both cover the campus plus ``GROUND_MARGIN`` metres; image row 0 is the north edge.
"""
from __future__ import annotations

import cv2
import numpy as np

from campusgps.synth import textures as T
from campusgps.synth.layout import Layout, Site, box_corners

GROUND_PPM = 8.0     # ground texels per metre
LIGHT_PPM = 2.0      # night light-map texels per metre
GROUND_MARGIN = 70.0  # ground texture extends this far beyond the campus


def ground_box(L: Layout) -> tuple:
    """(x0, y0, x1, y1) metres covered by the ground texture and the light map."""
    return L.x0 - GROUND_MARGIN, L.y0 - GROUND_MARGIN, L.x1 + GROUND_MARGIN, L.y1 + GROUND_MARGIN


class _Canvas:
    """Metres -> ground texel coordinates."""

    def __init__(self, box):
        self.gx0, self.gy0, self.gx1, self.gy1 = box
        self.w = int((self.gx1 - self.gx0) * GROUND_PPM)
        self.h = int((self.gy1 - self.gy0) * GROUND_PPM)

    def px(self, pts) -> np.ndarray:
        pts = np.asarray(pts, np.float64)
        return np.stack([(pts[:, 0] - self.gx0) * GROUND_PPM, (self.gy1 - pts[:, 1]) * GROUND_PPM],
                        -1).round().astype(np.int32)

    def pt(self, p) -> tuple:
        return tuple(self.px([p])[0])


def _plazas(g, cv: _Canvas, plazas: list) -> None:
    """Large warm pavers."""
    for k, (px0, py0, px1, py1) in enumerate(plazas):
        col = T.PALETTE["render"][k % len(T.PALETTE["render"])]
        cv2.fillPoly(g, [cv.px([[px0, py0], [px1, py0], [px1, py1], [px0, py1]])], tuple(float(v) * 0.8 for v in col))
        q = cv.px([[px0, py1], [px1, py0]])
        sx, sy = max(0, q[0, 0]), max(0, q[0, 1])
        ex, ey = min(cv.w, q[1, 0]), min(cv.h, q[1, 1])
        step = int(GROUND_PPM * (1.0 + 0.5 * (k % 2)))
        sub = g[sy:ey, sx:ex]
        sub[(np.arange(sub.shape[0]) % step) == 0] *= 0.7
        sub[:, (np.arange(sub.shape[1]) % step) == 0] *= 0.7


def _paths(g, cv: _Canvas, paths: list) -> None:
    """Paths (light pavement, darker kerbs) and the road (asphalt, centre dashes, sidewalks)."""
    for p in paths:
        a, b = np.asarray(p["pts"][0]), np.asarray(p["pts"][1])
        d = (b - a) / np.linalg.norm(b - a)
        nrm = np.array([-d[1], d[0]])
        hw = p["width"] / 2
        if p["kind"] == "road":
            sw = p["width"] / 2 + 2.2
            cv2.fillPoly(g, [cv.px([a + nrm * sw, b + nrm * sw, b - nrm * sw, a - nrm * sw])], (175, 170, 160))
            cv2.fillPoly(g, [cv.px([a + nrm * hw, b + nrm * hw, b - nrm * hw, a - nrm * hw])], (70, 72, 75))
            for t in np.arange(0, np.linalg.norm(b - a), 6.0):
                q0, q1 = a + d * t, a + d * (t + 3.0)
                cv2.line(g, cv.pt(q0), cv.pt(q1), (235, 235, 225), max(1, int(0.15 * GROUND_PPM)))
            for s in (-1, 1):
                cv2.line(g, cv.pt(a + s * nrm * hw), cv.pt(b + s * nrm * hw), (210, 210, 205),
                         max(1, int(0.25 * GROUND_PPM)))
        else:
            cv2.fillPoly(g, [cv.px([a + nrm * hw, b + nrm * hw, b - nrm * hw, a - nrm * hw])], (185, 178, 165))
            for s in (-1, 1):
                cv2.line(g, cv.pt(a + s * nrm * hw), cv.pt(b + s * nrm * hw), (140, 138, 130),
                         max(1, int(0.2 * GROUND_PPM)))


def _details(g, cv: _Canvas, L: Layout, site: Site, grng) -> None:
    """Flower beds on grass and manholes on paths, for local detail."""
    W, H = L.x1 - L.x0, L.y1 - L.y0
    for _ in range(int(W * H / 500)):
        x, y = grng.uniform(L.x0, L.x1), grng.uniform(L.y0, L.y1)
        if site.in_building(x, y, 1.0):
            continue
        if site.on_path(x, y, 0.0):
            cv2.circle(g, cv.pt([x, y]), int(0.35 * GROUND_PPM), (95, 95, 95), -1)
        else:
            col = [(200, 40, 60), (230, 190, 40), (150, 60, 160), (230, 120, 40), (240, 240, 230)][grng.integers(5)]
            cv2.ellipse(g, cv.pt([x, y]), (int(grng.uniform(1, 3) * GROUND_PPM), int(grng.uniform(0.6, 1.5) * GROUND_PPM)),
                        float(grng.uniform(0, 180)), 0, 360, tuple(0.5 * np.array(col) + 30), -1)


def ground_texture(grng, L: Layout, site: Site, plazas: list) -> list:
    """Ground texture mip levels (RGB uint8) over :func:`ground_box`."""
    cv = _Canvas(ground_box(L))
    gw, gh = cv.w, cv.h
    n1 = T.value_noise(grng, gh, gw, cell=GROUND_PPM * 6, octaves=4)
    n2 = T.value_noise(grng, gh, gw, cell=GROUND_PPM * 0.8, octaves=2)
    g = np.empty((gh, gw, 3), np.float32)
    g[:] = (85, 125, 55)
    g += n1[..., None] * np.array([25, 22, 12], np.float32) + n2[..., None] * 14
    g += grng.normal(0, 9, (gh, gw, 1)).astype(np.float32)
    # aprons around buildings (and landmarks)
    for c, _ in site.footprints:
        cen = c.mean(0)
        big = cen + (c - cen) * (1 + 3.0 / max(1.0, np.linalg.norm(c[0] - cen)))
        cv2.fillPoly(g, [cv.px(big)], (150, 145, 135))
    pav_n = grng.normal(0, 6, (gh, gw, 1)).astype(np.float32)
    _plazas(g, cv, plazas)
    _paths(g, cv, L.paths)
    # paver joints on light paths + noise everywhere
    light = (g.mean(-1) > 140)
    jx = (np.arange(gw) % int(GROUND_PPM * 0.6) == 0)[None, :]
    jy = (np.arange(gh) % int(GROUND_PPM * 0.6) == 0)[:, None]
    joint = light & (jx | jy)
    g[joint] *= 0.85
    g += pav_n * 0.7 + n1[..., None] * 6
    # walkway floor: distinctive dark tiles
    wk = L.walkway
    cv2.fillPoly(g, [cv.px(box_corners((wk["x0"] + wk["x1"]) / 2, wk["y"], wk["x1"] - wk["x0"], wk["width"]))],
                 (125, 110, 100))
    _details(g, cv, L, site, grng)
    ground0 = np.clip(g, 0, 255).astype(np.uint8)
    del g
    ground = [ground0, cv2.pyrDown(ground0)]
    ground.append(cv2.pyrDown(ground[-1]))
    ground.append(cv2.pyrDown(ground[-1]))
    return ground


def light_map(L: Layout, lamps: list, walkway: dict | None) -> np.ndarray:
    """Night light map (uint8, ``LIGHT_PPM``) over :func:`ground_box`: lamp pools and walkway fixtures."""
    gx0, gy0, gx1, gy1 = ground_box(L)
    lw_, lh_ = int((gx1 - gx0) * LIGHT_PPM), int((gy1 - gy0) * LIGHT_PPM)
    lm_ = np.zeros((lh_, lw_), np.float32)
    for x, y in lamps:
        cv2.circle(lm_, (int((x - gx0) * LIGHT_PPM), int((gy1 - y) * LIGHT_PPM)), int(5 * LIGHT_PPM), 1.0, -1)
    if walkway is not None:
        for xp in np.arange(walkway["x0"] + walkway["pillar_every"] / 2, walkway["x1"], walkway["pillar_every"]):
            cv2.circle(lm_, (int((xp - gx0) * LIGHT_PPM), int((gy1 - walkway["y"]) * LIGHT_PPM)),
                       int(2.5 * LIGHT_PPM), 0.8, -1)
    lm_ = cv2.GaussianBlur(lm_, (0, 0), 2.5 * LIGHT_PPM)
    return np.clip(lm_ * 400, 0, 255).astype(np.uint8)
