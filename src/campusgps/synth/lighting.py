"""Lighting of a rendered photo: conditions (ambient/sun strength, tint, haze, fog distance), the colours
of lit windows and lamps, and the sun's ground shadows around the camera.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

SHADOW_PPM = 2.0


@dataclass
class Lighting:
    condition: str = "day"     # day | overcast | dusk | night
    sun_az_deg: float = 150.0  # compass direction towards the sun
    sun_el_deg: float = 45.0
    exposure: float = 1.0
    wb: tuple = (1.0, 1.0, 1.0)


COND = {
    #            amb_wall sun_wall amb_ground sun_ground tint              haze_colour        fog_m
    "day":      (0.58, 0.55, 0.58, 0.50, (1.0, 1.0, 1.0), (200, 215, 235), 420.0),
    "overcast": (0.86, 0.08, 0.84, 0.00, (0.97, 0.99, 1.02), (195, 198, 204), 220.0),
    "dusk":     (0.42, 0.35, 0.42, 0.25, (1.05, 0.80, 0.62), (190, 130, 110), 260.0),
    "night":    (0.075, 0.0, 0.07, 0.0, (0.55, 0.65, 1.0), (18, 20, 32), 150.0),
}
WINDOW_LIGHT = np.array([255, 215, 150], np.float32)
LAMP_LIGHT = np.array([255, 200, 135], np.float32)


def shadow_map(world, light: Lighting, cam, radius: float = 160.0):
    """Ground shadow mask (1 = sunlit) around the camera; (map, x0, y1) or None without sun."""
    if light.condition not in ("day", "dusk") or light.sun_el_deg <= 1.0:
        return None
    x0 = cam.x - radius
    n = int(2 * radius * SHADOW_PPM)
    m = np.full((n, n), 255, np.uint8)
    az, el = math.radians(light.sun_az_deg), math.radians(light.sun_el_deg)
    k = 1.0 / max(math.tan(el), 0.08)
    off = -np.array([math.sin(az), math.cos(az)]) * k  # shadow direction per metre of height
    y1 = cam.y + radius

    def px(pts):
        return np.stack([(pts[:, 0] - x0) * SHADOW_PPM, (y1 - pts[:, 1]) * SHADOW_PPM], -1)

    for c, h in world.footprints:
        if abs(c[0, 0] - cam.x) > radius + 60 or abs(c[0, 1] - cam.y) > radius + 60:
            continue
        pts = np.concatenate([c, c + off * h])
        hull = cv2.convexHull(px(pts).astype(np.float32)).astype(np.int32)
        cv2.fillConvexPoly(m, hull, 0)
    ob = world.objects
    near = (np.abs(ob["x"] - cam.x) < radius) & (np.abs(ob["y"] - cam.y) < radius)
    for i in np.nonzero(near)[0]:
        sp = world.sprites[ob["sprite"][i]]
        if sp.kind != "tree":
            continue
        h = sp.h_m * 0.62
        cxy = px(np.array([[ob["x"][i], ob["y"][i]]]) + off * h)[0]
        r = sp.w_m * 0.45 * SHADOW_PPM
        cv2.ellipse(m, (int(cxy[0]), int(cxy[1])), (int(r * (1 + 0.3 * min(k, 3))), int(r)),
                    -math.degrees(math.atan2(-off[1], off[0])), 0, 360, 60, -1)
    m = cv2.GaussianBlur(m, (0, 0), 0.8)
    return m, x0, y1
