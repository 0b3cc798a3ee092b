"""Feature cache: computed once, reused, invalidated by image/backbone changes, survives interruption."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from campusgps.models import FeatureCache, get_backbone

torch.set_num_threads(2)


class Counting:
    """Wraps a backbone, counting images embedded; can fail after N batches (simulated Ctrl-C)."""

    def __init__(self, bb, fail_after=None):
        self.bb, self.n, self.batches, self.fail_after = bb, 0, 0, fail_after

    def __getattr__(self, k):
        return getattr(self.bb, k)

    def embed(self, images, batch_size=32, pooling="gap", progress=False):
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise KeyboardInterrupt
        self.batches += 1
        self.n += len(images)
        return self.bb.embed(images, batch_size=batch_size, pooling=pooling)

    def embed_pools(self, images, batch_size=32):
        self.embed(images[:0])  # counts the batch (and fails like embed) without a second pass
        self.n += len(images)
        return self.bb.embed_pools(images, batch_size=batch_size)


def test_computed_once_and_matches_direct(toy_dataset):
    bb = Counting(get_backbone("tiny-cnn", device="cpu"))
    cache = FeatureCache.for_dataset(toy_dataset)
    f1 = cache.get(toy_dataset, bb, progress=False)
    assert f1.shape == (len(toy_dataset), bb.feature_dim) and bb.n == len(toy_dataset)
    f2 = FeatureCache.for_dataset(toy_dataset).get(toy_dataset, bb)  # a new run
    assert bb.n == len(toy_dataset)  # nothing recomputed
    np.testing.assert_array_equal(f1, f2)
    direct = bb.bb.embed([toy_dataset.load_image(i, bb.load_max_side()) for i in range(3)])
    np.testing.assert_allclose(f1[:3], direct, rtol=1e-5, atol=1e-6)
    sub = toy_dataset.subset("val")
    np.testing.assert_array_equal(cache.get(sub, bb), f1[(toy_dataset.manifest["split"] == "val").to_numpy()])
    assert (toy_dataset.root / ".cache" / "features" / bb.key).is_dir()


def test_one_pass_caches_both_poolings_of_the_plain_photos(toy_dataset):
    """Regression reads gap, retrieval GeM, of the same photos: the first request computes both in one
    network pass, the second is served from the cache with the values a direct GeM embedding gives."""
    bb = Counting(get_backbone("tiny-cnn", device="cpu"))
    cache = FeatureCache.for_dataset(toy_dataset)
    cache.get(toy_dataset, bb, pooling="gap")
    assert bb.n == len(toy_dataset)
    g = FeatureCache.for_dataset(toy_dataset).get(toy_dataset, bb, pooling="gem")
    assert bb.n == len(toy_dataset)  # no second pass
    direct = bb.bb.embed([toy_dataset.load_image(i, bb.load_max_side()) for i in range(4)], pooling="gem")
    np.testing.assert_allclose(g[:4], direct, rtol=1e-5, atol=1e-6)
    cache.get(toy_dataset, bb, pooling="gem", view=1)  # augmented views: only what was asked for
    assert bb.n == 2 * len(toy_dataset)
    assert not any(p.name.startswith("gap-v1") for p in cache.store_dir(bb, "gap", 0).parent.iterdir())


def test_changed_image_is_recomputed(toy_dataset):
    bb = Counting(get_backbone("tiny-cnn", device="cpu"))
    cache = FeatureCache.for_dataset(toy_dataset)
    f1 = cache.get(toy_dataset, bb)
    p = toy_dataset.paths()[5]
    Image.fromarray(np.full((48, 64, 3), 30, np.uint8)).save(p, quality=90)
    f2 = FeatureCache.for_dataset(toy_dataset).get(toy_dataset, bb)
    assert bb.n == len(toy_dataset) + 1
    assert not np.allclose(f1[5], f2[5])
    np.testing.assert_array_equal(np.delete(f1, 5, 0), np.delete(f2, 5, 0))


def test_other_backbone_key_other_features(toy_dataset):
    bb = get_backbone("tiny-cnn", device="cpu", trainable=True)
    cache = FeatureCache.for_dataset(toy_dataset)
    f1 = cache.get(toy_dataset, bb)
    with torch.no_grad():
        for p in bb.net.parameters():
            p.mul_(1.5)
    bb.refresh_key()
    f2 = cache.get(toy_dataset, bb)
    assert not np.allclose(f1, f2)


def test_interrupted_run_keeps_partial_work(toy_dataset):
    n = len(toy_dataset)
    bb = Counting(get_backbone("tiny-cnn", device="cpu"), fail_after=1)
    cache = FeatureCache.for_dataset(toy_dataset)
    with pytest.raises(KeyboardInterrupt):
        cache.get(toy_dataset, bb, batch_size=8)  # cache batches are >= 32 rows
    done = bb.n
    assert 0 < done < n
    bb2 = Counting(bb.bb)
    f = FeatureCache.for_dataset(toy_dataset).get(toy_dataset, bb2)
    assert bb2.n == n - done
    full = bb.bb.embed([toy_dataset.load_image(i, bb.load_max_side()) for i in range(n)])
    np.testing.assert_allclose(f, full, rtol=1e-5, atol=1e-6)


def test_augmented_views_are_cached_and_deterministic(toy_dataset):
    bb = get_backbone("tiny-cnn", device="cpu")
    cache = FeatureCache.for_dataset(toy_dataset)
    v0 = cache.get(toy_dataset, bb, view=0)
    v1 = cache.get(toy_dataset, bb, view=1)
    v2 = cache.get(toy_dataset, bb, view=2)
    assert not np.allclose(v0, v1) and not np.allclose(v1, v2)
    import shutil

    shutil.rmtree(cache.root)
    np.testing.assert_allclose(FeatureCache.for_dataset(toy_dataset).get(toy_dataset, bb, view=1), v1, atol=1e-5)


def test_maps_and_below_pooling(toy_dataset):
    bb = get_backbone("tiny-cnn", device="cpu")
    cache = FeatureCache.for_dataset(toy_dataset)
    m = cache.get(toy_dataset, bb, pooling="maps")
    assert m.ndim == 4 and m.shape[:2] == (len(toy_dataset), bb.feature_dim)
    b = cache.get(toy_dataset, bb, pooling="below:2")
    assert b.ndim == 4 and len(b) == len(toy_dataset)
