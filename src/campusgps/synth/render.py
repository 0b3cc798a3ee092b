"""Column ray casting + z-buffer rasteriser for the procedural campus (numpy + OpenCV, CPU only).

Per image:
1. Every image column is a vertical plane through the camera; each front-facing wall segment is
   intersected with every column ray in one vectorised step, and the K nearest hits per column are
   z-tested pixel by pixel (a wall spans heights [zlo, zhi], so pillars, roof fascias and buildings mix).
2. Ground (z = 0) and ceilings (walkway roof) are intersected analytically per pixel; the sky is a
   panorama looked up by ray direction.
3. Textures are sampled with ``cv2.remap`` from mip-mapped atlases (level chosen by distance), shaded by
   sun direction (Lambert on walls, cast shadows on the ground), night lights are emissive channels.
4. Trees, lamps, benches, people and cars are depth-tested billboards drawn far to near.
5. Distance haze, exposure/white-balance jitter, sensor noise at night, then roll and crop.

Pitch is a principal-point shift (vertical lines stay vertical), roll is an image rotation: both match a
hand-held phone at the few degrees the capture uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from campusgps.synth.billboards import draw_billboards
from campusgps.synth.camera import Camera
from campusgps.synth.facades import WALL_PPM
from campusgps.synth.ground import GROUND_PPM, LIGHT_PPM
from campusgps.synth.lighting import COND, LAMP_LIGHT, WINDOW_LIGHT, Lighting, shadow_map
from campusgps.synth.textures import SKY_EL_MAX, SKY_EL_MIN, SKY_H, SKY_W
from campusgps.synth.world import World

K_HITS = 10


@dataclass
class _View:
    """Per-image ray geometry: column directions (Dx, Dy), row slopes b, principal point, margins for roll."""
    W: int
    H: int
    mx: int
    my: int
    roll: bool
    Wr: int
    Hr: int
    f: float
    cxp: float
    cyp: float
    Fx: float
    Fy: float
    Rx: float
    Ry: float
    a: np.ndarray
    b: np.ndarray
    Dx: np.ndarray
    Dy: np.ndarray
    z0: float


def _view(cam: Camera) -> _View:
    W, H = cam.width, cam.height
    mx, my = int(math.ceil(0.035 * W)) + 1, int(math.ceil(0.05 * H)) + 1
    roll = abs(cam.roll_deg) > 0.05
    if not roll:
        mx = my = 0
    Wr, Hr = W + 2 * mx, H + 2 * my
    f = cam.focal_px()
    cxp = Wr / 2.0
    cyp = Hr / 2.0 + f * math.tan(math.radians(cam.pitch_deg))
    psi = math.radians(cam.heading_deg)
    Fx, Fy = math.sin(psi), math.cos(psi)
    Rx, Ry = math.cos(psi), -math.sin(psi)
    a = ((np.arange(Wr, dtype=np.float32) + 0.5) - cxp) / f
    b = (cyp - (np.arange(Hr, dtype=np.float32) + 0.5)) / f
    return _View(W, H, mx, my, roll, Wr, Hr, f, cxp, cyp, Fx, Fy, Rx, Ry, a, b, Fx + a * Rx, Fy + a * Ry, cam.z)


def _sky(world: World, cam: Camera, light: Lighting, v: _View) -> np.ndarray:
    """Sky panorama looked up by ray direction, plus the sun's glow by day and at dusk."""
    a, b = v.a, v.b
    az = (cam.heading_deg + np.degrees(np.arctan(a)))[None, :] % 360.0
    el = np.degrees(np.arctan2(b[:, None], np.sqrt(1 + a * a)[None, :]))
    sx = (az * (SKY_W / 360.0)).astype(np.float32) * np.ones((v.Hr, 1), np.float32)
    sy = ((SKY_EL_MAX - el) / (SKY_EL_MAX - SKY_EL_MIN) * (SKY_H - 1)).astype(np.float32)
    img = cv2.remap(world.skies[light.condition], sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP).astype(np.float32)
    if light.condition in ("day", "dusk"):  # sun glow
        saz, sel = math.radians(light.sun_az_deg), math.radians(light.sun_el_deg)
        s_vec = np.array([math.cos(sel) * math.sin(saz), math.cos(sel) * math.cos(saz), math.sin(sel)], np.float32)
        n = np.sqrt(1 + a[None, :] ** 2 + b[:, None] ** 2)
        cosang = (v.Dx[None, :] * s_vec[0] + v.Dy[None, :] * s_vec[1] + b[:, None] * s_vec[2]) / n
        glow = np.clip((cosang - 0.96) / 0.04, 0, 1) ** 2
        img += glow[..., None] * (np.array([90, 80, 50], np.float32) if light.condition == "day" else
                                  np.array([120, 60, 10], np.float32))
    return img


def _ceilings(world: World, cam: Camera, v: _View, zbuf, label):
    """Ceilings (walkway roof) above the camera, intersected per pixel -> (zbuf, cmap or None)."""
    cmap = None
    b = v.b
    for ci, c in enumerate(world.ceilings):
        if c["z"] <= v.z0:
            continue
        up = b > 1e-4
        sc = np.where(up, (c["z"] - v.z0) / np.maximum(b, 1e-4), np.inf).astype(np.float32)[:, None]
        sc = np.minimum(sc, 1e4)
        px = cam.x + sc * v.Dx[None, :] - c["cx"]
        py = cam.y + sc * v.Dy[None, :] - c["cy"]
        ca, sa = math.cos(math.radians(c["angle"])), math.sin(math.radians(c["angle"]))
        lu = px * ca + py * sa
        lv = -px * sa + py * ca
        inside = (np.abs(lu) <= c["len"] / 2) & (np.abs(lv) <= c["wid"] / 2) & (sc < zbuf)
        if inside.any():
            zbuf = np.where(inside, sc, zbuf)
            label[inside] = 3
            cmap = (ci, ((lu + c["len"] / 2) * c["ppm"]).astype(np.float32),
                    ((c["wid"] / 2 - lv) * c["ppm"]).astype(np.float32), inside)
    return zbuf, cmap


def _wall_hits(world: World, cam: Camera, v: _View):
    """The K nearest front-facing wall hits per column, nearest first -> (segK, sK, uK) or None."""
    S = world.seg
    qx, qy = S["x0"] - cam.x, S["y0"] - cam.y
    front = (-(qx * S["nx"] + qy * S["ny"])) > 1e-6        # camera on the outer side
    d0 = qx * v.Fx + qy * v.Fy
    d1 = (S["x1"] - cam.x) * v.Fx + (S["y1"] - cam.y) * v.Fy
    near = np.minimum(np.hypot(qx, qy), np.hypot(S["x1"] - cam.x, S["y1"] - cam.y)) < 600
    sel = np.nonzero(front & ((d0 > 0.05) | (d1 > 0.05)) & near)[0]
    if not sel.size:
        return None
    ex = (S["x1"][sel] - S["x0"][sel])[:, None].astype(np.float32)
    ey = (S["y1"][sel] - S["y0"][sel])[:, None].astype(np.float32)
    Qx, Qy = qx[sel][:, None].astype(np.float32), qy[sel][:, None].astype(np.float32)
    den = v.Dx[None, :] * ey - v.Dy[None, :] * ex
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (Qx * ey - Qy * ex) / den
        u = (Qx * v.Dy[None, :] - Qy * v.Dx[None, :]) / den
    ok = (u >= 0) & (u <= 1) & (s > 0.05) & np.isfinite(s)
    s = np.where(ok, s, np.inf).astype(np.float32)
    K = min(K_HITS, sel.size)
    if K < sel.size:
        idx = np.argpartition(s, K - 1, axis=0)[:K]
    else:
        idx = np.broadcast_to(np.arange(sel.size)[:, None], s.shape)
    sK = np.take_along_axis(s, idx, 0)
    uK = np.take_along_axis(u, idx, 0)
    order = np.argsort(sK, axis=0, kind="stable")  # nearest first, so the loop can stop early
    sK = np.take_along_axis(sK, order, 0)
    uK = np.take_along_axis(uK, order, 0)
    return sel[np.take_along_axis(idx, order, 0)], sK, uK


def _walls(world: World, light: Lighting, cam: Camera, v: _View, zbuf, label):
    """Z-test the wall hits pixel by pixel -> (zbuf, atlas x map, atlas y map, shading) (maps None: no walls)."""
    hits = _wall_hits(world, cam, v)
    if hits is None:
        return zbuf, None, None, None
    segK, sK, uK = hits
    S, Hr, Wr, b, z0 = world.seg, v.Hr, v.Wr, v.b, v.z0
    amb_w, sun_w = COND[light.condition][:2]
    wall_ax = np.zeros((Hr, Wr), np.float32)
    wall_ay = np.zeros((Hr, Wr), np.float32)
    wall_sh = np.zeros((Hr, Wr), np.float32)
    saz, sel_ = math.radians(light.sun_az_deg), math.radians(light.sun_el_deg)
    Lx, Ly = math.sin(saz) * math.cos(sel_), math.cos(saz) * math.cos(sel_)
    for k in range(len(sK)):
        sk = sK[k]
        valid = np.isfinite(sk)
        if not valid.any():
            break
        sg_k = segK[k]
        skc = np.where(valid, sk, 0.0).astype(np.float32)
        zpix = z0 + skc[None, :] * b[:, None]
        zlo, zhi = S["zlo"][sg_k].astype(np.float32), S["zhi"][sg_k].astype(np.float32)
        m = (zpix >= zlo[None, :]) & (zpix <= zhi[None, :]) & (sk[None, :] < zbuf)
        if not m.any():
            continue
        zbuf = np.where(m, sk[None, :], zbuf)
        label[m] = 2
        axc = (S["ax"][sg_k] + uK[k] * S["len"][sg_k] * WALL_PPM).astype(np.float32)
        np.copyto(wall_ax, np.broadcast_to(axc[None, :], (Hr, Wr)), where=m)
        np.copyto(wall_ay, (S["ay"][sg_k].astype(np.float32)[None, :] + (zhi[None, :] - zpix) * WALL_PPM), where=m)
        lam = np.maximum(0.0, S["nx"][sg_k] * Lx + S["ny"][sg_k] * Ly).astype(np.float32)
        # soft ambient occlusion near the ground
        ao = 0.78 + 0.22 * np.clip(zpix / 1.8, 0, 1)
        np.copyto(wall_sh, (amb_w + sun_w * lam)[None, :] * ao, where=m)
    return zbuf, wall_ax, wall_ay, wall_sh


def _mip_lookup(levels, mapx, mapy, lvl, border=cv2.BORDER_REFLECT):
    """Trilinear-ish lookup: blend of the two mip levels around ``lvl`` (per pixel)."""
    out = None
    L = len(levels)
    lvl = np.clip(lvl, 0, L - 1)
    for i in range(L):
        w = np.clip(1.0 - np.abs(lvl - i), 0, 1)
        if not (w > 0).any():
            continue
        sc = 1.0 / (2 ** i)
        hh, ww = levels[i].shape[:2]
        # clamp: OpenCV's reflect border is slow for far-out coordinates (maps hold no NaN)
        mx_ = np.clip(mapx * sc, -1, ww)
        my_ = np.clip(mapy * sc, -1, hh)
        t = cv2.remap(levels[i], mx_, my_, cv2.INTER_LINEAR, borderMode=border).astype(np.float32)
        out = t * w[..., None] if out is None else out + t * w[..., None]
    return out


def _shade_ground(world, cam, light, v: _View, img, emit, gmask, sg, gx, gy):
    """Ground texture, sun/shadow shading and lamp light; -> the shadow map (or None) for the billboards."""
    amb_w, sun_w, amb_g, sun_g = COND[light.condition][:4]
    night, dusk = light.condition == "night", light.condition == "dusk"
    gx0, gy0, gx1, gy1 = world.ground_box
    z0 = v.z0
    gmx = ((gx - gx0) * GROUND_PPM).astype(np.float32)
    gmy = ((gy1 - gy) * GROUND_PPM).astype(np.float32)
    fp = (sg / v.f)[:, None] * np.sqrt(np.maximum(sg, z0) / z0)[:, None] * np.ones((1, v.Wr), np.float32)
    glvl = np.log2(np.maximum(fp * GROUND_PPM, 1e-3)) + 0.3
    gbase = _mip_lookup(world.ground, gmx, gmy, glvl)
    gshade = np.full((v.Hr, v.Wr), amb_g, np.float32)
    sh = shadow_map(world, light, cam)
    if sh is not None and sun_g > 0:
        m_, sx0, sy1 = sh
        lit = cv2.remap(m_, ((gx - sx0) * 2.0).astype(np.float32), ((sy1 - gy) * 2.0).astype(np.float32),
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255).astype(np.float32) / 255
        gshade += sun_g * lit * min(1.0, math.sin(math.radians(light.sun_el_deg)) * 1.6)
    gcol = gbase * gshade[..., None]
    if night or dusk:
        lm = cv2.remap(world.light, ((gx - gx0) * LIGHT_PPM).astype(np.float32),
                       ((gy1 - gy) * LIGHT_PPM).astype(np.float32), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(np.float32) / 255
        gem = gbase * lm[..., None] * (LAMP_LIGHT / 255 * (0.85 if night else 0.25))
        emit[gmask] = gem[gmask]
    img[gmask] = gcol[gmask]
    return sh


def _shade_walls_ceiling(world, light, v: _View, img, emit, label, zbuf, walls, cmap) -> None:
    """Facade and ceiling textures with their lit windows / fixtures at dusk and night."""
    amb_w = COND[light.condition][0]
    night, dusk = light.condition == "night", light.condition == "dusk"
    _, wall_ax, wall_ay, wall_sh = walls
    wmask = label == 2
    if wmask.any():
        wlvl = np.log2(np.maximum(zbuf * (WALL_PPM / v.f), 1e-3)) + 0.2
        wcol = _mip_lookup(world.atlas, wall_ax, wall_ay, np.where(wmask, wlvl, 0))
        rgb = wcol[..., :3] * wall_sh[..., None]
        if night or dusk:
            wem = (wcol[..., 3:4] / 255.0) * WINDOW_LIGHT * (0.75 if night else 0.3)
            emit[wmask] = wem[wmask]
        img[wmask] = rgb[wmask]
    cmask = label == 3
    if cmask.any() and cmap is not None:
        ci, cmx, cmy, _ = cmap
        c = world.ceilings[ci]
        clvl = np.log2(np.maximum(zbuf * (c["ppm"] / v.f), 1e-3))
        ccol = _mip_lookup(c["tex"], cmx, cmy, clvl)
        rgb = ccol[..., :3] * (amb_w * 0.8)
        if night or dusk:
            cem = (ccol[..., 3:4] / 255.0) * WINDOW_LIGHT * (1.0 if night else 0.5)
            emit[cmask] = cem[cmask]
        img[cmask] = rgb[cmask]


def _finish(light: Lighting, v: _View, img, emit, rng, roll_deg: float) -> np.ndarray:
    """Camera: white balance / exposure, sensor noise, roll and crop."""
    tint = COND[light.condition][4]
    img = (img * np.asarray(tint, np.float32) + emit) * (np.asarray(light.wb, np.float32) * light.exposure)
    if light.condition == "night":
        img = cv2.GaussianBlur(img, (0, 0), 0.7)
        img += rng.standard_normal(img.shape[:2] + (1,), dtype=np.float32) * 5.0
        img += rng.standard_normal(img.shape, dtype=np.float32) * 3.0
    elif light.condition == "dusk":
        img += rng.standard_normal(img.shape, dtype=np.float32) * 2.5
    else:
        img += rng.standard_normal(img.shape, dtype=np.float32) * 1.2
    img = np.clip(img, 0, 255)
    if v.roll:
        Mr = cv2.getRotationMatrix2D((v.Wr / 2.0, v.Hr / 2.0), -roll_deg, 1.0)
        Mr[0, 2] -= v.mx
        Mr[1, 2] -= v.my
        img = cv2.warpAffine(img, Mr, (v.W, v.H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return img.astype(np.uint8)


def render(world: World, cam: Camera, light: Lighting, occluders=(), seed: int = 0) -> np.ndarray:
    """Render one RGB uint8 image (cam.height, cam.width, 3)."""
    rng = np.random.default_rng(seed)
    v = _view(cam)
    Hr, Wr, b, z0 = v.Hr, v.Wr, v.b, v.z0
    haze_c, fog = COND[light.condition][5:]
    img = _sky(world, cam, light, v)
    emit = np.zeros((Hr, Wr, 3), np.float32)  # light sources: not tinted by the ambient colour
    label = np.zeros((Hr, Wr), np.uint8)  # 0 sky, 1 ground, 2 wall, 3 ceiling
    zbuf = np.full((Hr, Wr), np.inf, np.float32)
    # ground: z = 0, intersected analytically per pixel
    g_rows = b < -1e-4
    sg = np.where(g_rows, z0 / np.maximum(-b, 1e-4), np.inf).astype(np.float32)
    sg = np.minimum(sg, 3000.0)
    zbuf[g_rows] = np.broadcast_to(sg[:, None], (Hr, Wr))[g_rows]
    label[g_rows] = 1
    gx = cam.x + sg[:, None] * v.Dx[None, :]
    gy = cam.y + sg[:, None] * v.Dy[None, :]
    zbuf, cmap = _ceilings(world, cam, v, zbuf, label)
    walls = _walls(world, light, cam, v, zbuf, label)
    zbuf = walls[0]
    gmask = label == 1
    sh = _shade_ground(world, cam, light, v, img, emit, gmask, sg, gx, gy) if gmask.any() else None
    _shade_walls_ceiling(world, light, v, img, emit, label, zbuf, walls, cmap)
    # distance haze
    solid = label > 0
    hz = np.exp(-np.where(solid, zbuf, 0) / fog)[..., None]
    img = np.where(solid[..., None], img * hz + np.asarray(haze_c, np.float32) * (1 - hz), img)
    if light.condition in ("night", "dusk"):
        emit *= np.where(solid[..., None], hz, 1.0)
    draw_billboards(world, cam, light, v, img, emit, zbuf, occluders, sh)
    return _finish(light, v, img, emit, rng, cam.roll_deg)
