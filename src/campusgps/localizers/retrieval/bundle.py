"""A retrieval (or hybrid) model's bundle state: the serialised reference indexes (any ``--index`` kind,
plain FAISS bytes), positions, ids, projection, thumbnails, fusion and calibration."""
from __future__ import annotations

import numpy as np

from campusgps.errors import BundleError
from campusgps.localizers.retrieval import descriptors as D
from campusgps.localizers.retrieval import index as X
from campusgps.localizers.retrieval.projection import Projection


def state(loc, version: int) -> tuple[dict, dict]:
    """(tensors, metadata) of a fitted retrieval localizer."""
    if loc._index is None:
        loc._build_index()
    t, index_meta = X.pack(loc._index, loc._aug_index)
    t["ref_en"] = loc.ref_en.astype(np.float64)
    if len(loc.ref_time) == len(loc.ref_en):
        t["ref_time"] = np.asarray(loc.ref_time, dtype=np.float64)
    t.update(loc.proj.tensors())
    if len(loc.aug_of):  # optional: bundles without them load as before
        t["aug_of"] = np.asarray(loc.aug_of, np.int64)
    t["thumbs"], t["thumb_offsets"] = D.pack_bytes([bytes(b) for b in loc.thumbs])
    meta = {"state_version": version, "ref_ids": loc.ref_ids, "ref_files": loc.ref_files,
            "fusion": loc.fusion, "calib": loc.calib, "backbone": loc.cfg.backbone,
            "backbone_key": loc._expected_backbone_key, "dim": int(loc.ref_desc.shape[1]),
            "night_views": loc._n_night_views(), **index_meta}
    return t, meta


def restore(loc, tensors: dict, meta: dict):
    """Fill a fresh localizer ``loc`` (its ``cfg`` set) from :func:`state`'s output; returns it."""
    method = loc.method
    retrain = f"retrain with `campusgps train DATASET --method {method}`"
    loc._bundle_night_views = int(meta.get("night_views", 0) or 0)  # older bundles: none
    loc.proj = Projection.from_tensors(tensors)
    loc.cfg.index = (meta.get("index") or {}).get("kind", "flat")
    loc._index, loc._aug_index = X.unpack(tensors, meta)
    idx = loc._index
    loc.ref_desc = idx.vectors() if idx.n else np.zeros((0, int(meta["dim"])), np.float32)  # ivfpq: fp16 copy
    loc.ref_en = np.asarray(tensors["ref_en"], dtype=np.float64).reshape(-1, 2)
    loc._set_aug(None)
    if tensors.get("aug_of") is not None and len(tensors["aug_of"]):
        if loc._aug_index is not None:
            loc.aug_desc = loc._aug_index.vectors()
        loc.aug_of = np.asarray(tensors["aug_of"], np.int64)
        if len(loc.aug_desc) != len(loc.aug_of) or loc.aug_of.max() >= len(loc.ref_en) or loc.aug_of.min() < 0:
            raise BundleError(f"inconsistent {method} bundle: low-light descriptors do not match the "
                              f"references; {retrain}")
    loc.ref_ids, loc.ref_files = list(meta["ref_ids"]), list(meta["ref_files"])
    rt = tensors.get("ref_time")
    loc.ref_time = (np.asarray(rt, np.float64) if rt is not None and len(rt) == len(loc.ref_en)
                    else np.full(len(loc.ref_en), np.nan))
    if not (len(loc.ref_ids) == len(loc.ref_en) == idx.n):
        raise BundleError(f"inconsistent {method} bundle: {idx.n} indexed descriptors, "
                          f"{len(loc.ref_en)} positions, {len(loc.ref_ids)} ids")
    loc.thumbs = D.unpack_bytes(tensors.get("thumbs", np.zeros(0, np.uint8)),
                                tensors.get("thumb_offsets", np.zeros(1, np.int64)))
    loc.fusion, loc.calib = dict(meta["fusion"]), dict(meta["calib"])
    loc._expected_backbone_key = meta.get("backbone_key")
    return loc
