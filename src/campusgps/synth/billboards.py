"""Billboards: trees, lamps, benches, bins, people and cars as depth-tested, hazed sprites drawn far to near
(lit by the sun's shadow map by day, by lamps and their own glow at night)."""
from __future__ import annotations

import math

import cv2
import numpy as np

from campusgps.synth.ground import LIGHT_PPM
from campusgps.synth.lighting import COND, LAMP_LIGHT


def _billboard(world, light, v, img, emit, zbuf, spr, dp, lat_i, x_i, y_i, sh) -> None:
    """Draw one sprite at depth ``dp`` (depth-tested against ``zbuf``, hazed, lit at night)."""
    amb_w, sun_w, _, _, _, haze_c, fog = COND[light.condition]
    night, dusk = light.condition == "night", light.condition == "dusk"
    f, Wr, Hr = v.f, v.Wr, v.Hr
    scale = f / dp
    wpx, hpx = spr.w_m * scale, spr.h_m * scale
    if hpx < 1.5:
        return
    xl = v.cxp + float(lat_i) * scale - wpx / 2
    ybot = v.cyp + f * v.z0 / dp
    yt = ybot - hpx
    rx0, rx1 = max(0, int(math.floor(xl))), min(Wr, int(math.ceil(xl + wpx)))
    ry0, ry1 = max(0, int(math.floor(yt))), min(Hr, int(math.ceil(ybot)))
    if rx1 <= rx0 or ry1 <= ry0:
        return
    s0 = hpx / spr.img[0].shape[0]
    lv = int(np.clip(math.floor(math.log2(max(1e-6, 1.0 / s0))), 0, len(spr.img) - 1))
    src = spr.img[lv]
    sc = hpx / src.shape[0]
    M = np.array([[sc, 0, xl - rx0], [0, sc, yt - ry0]], np.float32)
    wimg = cv2.warpAffine(src, M, (rx1 - rx0, ry1 - ry0), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0)).astype(np.float32)
    alpha = wimg[..., 3] / 255.0 * (zbuf[ry0:ry1, rx0:rx1] > dp)
    if not alpha.any():
        return
    shade = amb_w + sun_w * 0.6
    if sh is not None:
        m_, sx0, sy1 = sh
        u_ = int((x_i - sx0) * 2.0)
        v_ = int((sy1 - y_i) * 2.0)
        if 0 <= v_ < m_.shape[0] and 0 <= u_ < m_.shape[1]:
            shade = amb_w + sun_w * 0.6 * (m_[v_, u_] / 255.0)
    rgb = wimg[..., :3] * shade
    e = math.exp(-dp / fog)
    rgb = rgb * e + np.asarray(haze_c, np.float32) * (1 - e)
    a3 = alpha[..., None]
    roi = img[ry0:ry1, rx0:rx1]
    img[ry0:ry1, rx0:rx1] = roi * (1 - a3) + rgb * a3
    if night or dusk:
        em = np.zeros_like(rgb)
        if spr.glow is not None:
            gl = cv2.warpAffine(spr.glow[lv], M, (rx1 - rx0, ry1 - ry0), flags=cv2.INTER_LINEAR).astype(np.float32)
            em += (gl / 255.0)[..., None] * LAMP_LIGHT * (1.0 if night else 0.5)
        if night:  # objects near lamps are lit
            gx0, _, _, gy1 = world.ground_box
            u_ = int((x_i - gx0) * LIGHT_PPM)
            v_ = int((gy1 - y_i) * LIGHT_PPM)
            if 0 <= v_ < world.light.shape[0] and 0 <= u_ < world.light.shape[1]:
                em += wimg[..., :3] * (world.light[v_, u_] / 255.0) * 0.6
        eroi = emit[ry0:ry1, rx0:rx1]
        emit[ry0:ry1, rx0:rx1] = eroi * (1 - a3) + em * e * a3


def draw_billboards(world, cam, light, v, img, emit, zbuf, occluders, sh) -> None:
    """World objects + transient occluders, drawn far to near."""
    ob = world.objects
    xs = np.concatenate([ob["x"], np.array([o[0] for o in occluders], np.float64)])
    ys = np.concatenate([ob["y"], np.array([o[1] for o in occluders], np.float64)])
    sp = np.concatenate([ob["sprite"], np.array([o[2] for o in occluders], np.int32)])
    rx, ry = xs - cam.x, ys - cam.y
    depth = rx * v.Fx + ry * v.Fy
    lat = rx * v.Rx + ry * v.Ry
    tanh = (v.Wr / 2) / v.f
    cand = np.nonzero((depth > 0.4) & (depth < 400) & (np.abs(lat) < depth * tanh + 6))[0]
    cand = cand[np.argsort(-depth[cand], kind="stable")]
    for i in cand:
        spr = world.sprites[sp[i]]
        dp = float(depth[i])
        if spr.kind not in ("tree", "lamp") and dp > 80:
            continue
        _billboard(world, light, v, img, emit, zbuf, spr, dp, lat[i], xs[i], ys[i], sh)
