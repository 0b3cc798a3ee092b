"""Backbone registry: preprocessing, determinism, fast paths agree with fp32 eager."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from campusgps.errors import UserError
from campusgps.models.backbones import cosine_rows, get_backbone, probe_images

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CAMPUSGPS_CACHE", str(tmp_path_factory.getbasetemp() / "cgcache"))


def test_tiny_cnn_embed_shapes_and_determinism():
    bb = get_backbone("tiny-cnn", device="cpu")
    imgs = probe_images(3, 100)
    f = bb.embed(imgs, batch_size=2)
    assert f.shape == (3, bb.feature_dim) and f.dtype == np.float32 and np.isfinite(f).all()
    assert bb.feature_maps(imgs[:1]).shape[:2] == (1, bb.feature_dim)
    other = get_backbone("tiny-cnn", device="cpu", trainable=True)  # fresh build, same fixed seed
    assert other.key == bb.key
    np.testing.assert_allclose(other.embed(imgs), f, rtol=1e-5, atol=1e-5)
    assert bb.embed([]).shape == (0, bb.feature_dim)


def test_odd_images_work():
    bb = get_backbone("tiny-cnn", device="cpu")
    gray = np.full((50, 70), 128, np.uint8)
    rgba = np.zeros((40, 30, 4), np.uint8)
    rgba[..., 3] = 255
    deep = (np.arange(60 * 80 * 3).reshape(60, 80, 3) % 65535).astype(np.uint16)
    huge = np.zeros((3000, 4000, 3), np.uint8)
    f = bb.embed([gray, rgba, deep, huge])
    assert f.shape == (4, bb.feature_dim) and np.isfinite(f).all()


def test_key_tracks_weights_and_unknown_name():
    bb = get_backbone("tiny-cnn", device="cpu", trainable=True)
    k0 = bb.key
    with torch.no_grad():
        next(bb.net.parameters()).add_(0.1)
    bb.refresh_key()
    assert bb.key != k0
    with pytest.raises(UserError, match="unknown backbone"):
        get_backbone("resnet-9000")


def test_tiny_onnx_path_matches_eager():
    eager = get_backbone("tiny-cnn", device="cpu", fast="eager")
    onnx = get_backbone("tiny-cnn", device="cpu", fast="onnx")
    assert onnx.path == "onnx"
    imgs = probe_images(4, 90)
    assert cosine_rows(eager.embed(imgs), onnx.embed(imgs)).min() >= 0.999
    assert onnx.onnx_path().exists()


def test_efficientnet_lite0_real_weights_fast_paths():
    """ImageNet Lite0: the default fast path ('auto') must give the same features as fp32 eager."""
    bb = get_backbone("efficientnet-lite0", device="cpu", fast="auto")
    assert bb.input_size == 224 and bb.feature_dim == 1280
    imgs = probe_images(4, 256)
    ref = get_backbone("efficientnet-lite0", device="cpu", fast="eager").embed(imgs)
    got = bb.embed(imgs)
    assert bb.path in ("onnx", "bf16", "eager")
    assert cosine_rows(ref, got).min() >= 0.99
    # different images give different features (a broken/constant network would not)
    assert cosine_rows(ref[:1].repeat(3, 0), ref[1:]).min() < 0.99
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert bb.check_path("bf16", imgs) >= 0.99


@pytest.mark.parametrize("mode", ["top", "full"])
def test_fine_tune_models_start_from_the_cached_features(mode):
    """Fine-tuning `top-N` (inputs: cached activations below the top blocks) and `full` (inputs: uint8
    photos, normalised inside the model) start from the same pooled features the frozen path caches:
    a wrong normalisation or split would train on a different picture of the photo than predict sees."""
    from campusgps.models.heads import head_spec
    from campusgps.training.task import build_model

    bb = get_backbone("tiny-cnn", device="cpu", fast="eager")
    imgs = probe_images(3, 100)
    want = bb.embed(imgs)  # global-average pooled, the frozen path's cache
    spec = {"mode": mode, "n_top": 1, "backbone": "tiny-cnn",
            "head": head_spec(bb.feature_dim, [8], 0.0, "gelu", False)}
    model = build_model(spec).eval()
    x = bb.features_below(imgs, 1) if mode == "top" else bb.preprocess(imgs)
    with torch.no_grad():
        got = model.body(torch.from_numpy(np.ascontiguousarray(x))).float()
    got = got.mean((2, 3)).numpy() if got.ndim == 4 else got.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
