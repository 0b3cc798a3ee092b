"""Global descriptors: GeM-pooled backbone features of photos (and of their low-light views), from the
dataset's feature cache when it offers them, else computed; plus reference thumbnails for the web page.
"""
from __future__ import annotations

import io

import numpy as np

from campusgps.errors import UserError
from campusgps.localizers.retrieval.views import LowLightView, low_light_kind, photometric_variants
from campusgps.models.pooling import gem

# what a feature cache that cannot serve a request raises (then the descriptors are computed directly)
_CACHE_MISS = (ImportError, ValueError, KeyError, TypeError, NotImplementedError, UserError)


def l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _pooling(gem_p: float) -> str:
    return "gem" if gem_p == 3.0 else f"gem{gem_p:g}"


def raw_from_images(bb, images: list[np.ndarray], gem_p: float, batch_size: int, tta: bool = False) -> np.ndarray:
    """GeM descriptors (not normalised) of decoded images; ``tta``: mean of the photometric variants."""
    out = []
    bs = max(1, int(batch_size))
    vector = getattr(bb, "output_kind", "maps") == "vector"  # an ONNX model's own global vector: no pooling
    if tta:
        for img in images:
            v = photometric_variants(img)
            f = bb.embed(v) if vector else gem(bb.feature_maps(v), gem_p)
            out.append(l2n(f).mean(0, keepdims=True))
        return np.concatenate(out, 0) if out else np.zeros((0, bb.feature_dim), np.float32)
    for s in range(0, len(images), bs):
        if gem_p == 3.0 or vector:
            out.append(bb.embed(images[s:s + bs], batch_size=bs, pooling="gem"))
        else:
            out.append(gem(bb.feature_maps(images[s:s + bs]), gem_p))
    return np.concatenate(out, 0) if out else np.zeros((0, bb.feature_dim), np.float32)


def _cached(ds, bb, gem_p: float, **view) -> np.ndarray | None:
    try:
        from campusgps.models.features import FeatureCache

        cache = FeatureCache.for_dataset(ds)
        return np.asarray(cache.get(ds, bb, pooling=_pooling(gem_p), **view), dtype=np.float32)
    except _CACHE_MISS:
        return None


def raw_from_dataset(bb, ds, gem_p: float, batch_size: int) -> np.ndarray:
    """GeM descriptors of every row of ``ds``: from the feature cache when it supports GeM."""
    if len(ds) == 0:
        return np.zeros((0, bb.feature_dim), np.float32)
    got = _cached(ds, bb, gem_p)
    if got is not None:
        return got
    imgs, raw = [], []
    for i in range(len(ds)):
        imgs.append(ds.load_image(i, max_side=bb.load_max_side()))
        if len(imgs) == batch_size:
            raw.append(raw_from_images(bb, imgs, gem_p, batch_size))
            imgs = []
    if imgs:
        raw.append(raw_from_images(bb, imgs, gem_p, batch_size))
    return np.concatenate(raw, 0)


def raw_views_from_dataset(bb, ds, n_views: int, gem_p: float, batch_size: int) -> list[np.ndarray]:
    """GeM descriptors of the ``n_views`` low-light renderings of every row of ``ds`` (cached)."""
    if n_views <= 0 or len(ds) == 0:
        return []
    out = []
    for v in range(1, n_views + 1):
        aug = LowLightView(low_light_kind(v))
        got = _cached(ds, bb, gem_p, view=v, augment=aug)
        if got is not None:
            out.append(got)
            continue
        raw = []
        for s in range(0, len(ds), batch_size):
            imgs = [aug(ds.load_image(i, max_side=bb.load_max_side()), np.random.default_rng((i + 1) * 7919 + v))
                    for i in range(s, min(len(ds), s + batch_size))]
            raw.append(raw_from_images(bb, imgs, gem_p, batch_size))
        out.append(np.concatenate(raw, 0))
    return out


def fit_pca_whitening(x: np.ndarray, dim: int, shrink: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Regularised PCA-whitening of L2-normalised descriptors: returns (mean, P) with P (D, d)."""
    x = l2n(x).astype(np.float64)
    mean = x.mean(0)
    xc = x - mean
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    d = int(max(1, min(dim, len(s) - 1 if len(s) > 1 else 1, x.shape[1])))
    var = s[:d] ** 2 / max(1, len(x) - 1)
    var = var + shrink * var.mean()
    P = vt[:d].T / np.sqrt(var)[None, :]
    return mean.astype(np.float32), P.astype(np.float32)


def make_thumbnail(img: np.ndarray, px: int = 128) -> bytes:
    from PIL import Image

    im = Image.fromarray(np.asarray(img, dtype=np.uint8))
    im.thumbnail((px, px))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def pack_bytes(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Byte strings -> (one uint8 array, offsets) for a bundle; ``unpack_bytes`` reverses it."""
    offs = np.zeros(len(blobs) + 1, dtype=np.int64)
    offs[1:] = np.cumsum([len(b) for b in blobs])
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8).copy() if blobs else np.zeros(0, np.uint8)
    return data, offs


def unpack_bytes(data: np.ndarray, offs: np.ndarray) -> list[bytes]:
    return [data[offs[i]:offs[i + 1]].tobytes() for i in range(len(offs) - 1)]
