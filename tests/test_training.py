"""Training loop: NaN batches skipped, divergence stops with a message, resume continues exactly, DDP learns."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from campusgps.training.loop import LoopConfig, TrainingDiverged, lr_lambda, train

torch.set_num_threads(1)


def _problem(n=128, d=8, seed=0):
    w = np.random.default_rng(99).normal(size=(d, 2)).astype(np.float32)  # same mapping for every split
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(x @ w * 0.3)


def _setup(nan_batches=(), n=128, bs=16):
    x, y = _problem(n)
    xv, yv = _problem(64, seed=1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Dropout(0.1), torch.nn.Linear(32, 2))

    def batches(epoch, rng):
        perm = rng.permutation(n)
        for b in range(n // bs):
            xb = x[perm[b * bs:(b + 1) * bs]].clone()
            if (epoch, b) in nan_batches:
                xb[0, 0] = float("nan")
            yield xb, y[perm[b * bs:(b + 1) * bs]]

    def loss_fn(net, xb, yb):
        return ((net(xb) - yb) ** 2).sum(1).mean()

    def validate(m):
        with torch.no_grad():
            e = (m(xv) - yv).norm(dim=1).numpy()
        return {"median_m": float(np.median(e))}

    return model, loss_fn, batches, validate, n // bs


def test_learns_and_skips_nan_batches():
    model, loss_fn, batches, validate, steps = _setup(nan_batches={(0, 1), (3, 2)})
    v0 = validate(model)["median_m"]
    res = train(model, loss_fn, batches, validate, LoopConfig(epochs=15, lr=1e-2, patience=50), steps, progress=False)
    assert res.bad_batches == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert res.best_val < 0.3 * v0


def test_too_many_nan_batches_stop_with_message():
    bad = {(0, b) for b in range(8)}
    model, loss_fn, batches, validate, steps = _setup(nan_batches=bad)
    with pytest.raises(TrainingDiverged, match="NaN/inf.*--lr"):
        train(model, loss_fn, batches, validate, LoopConfig(epochs=3), steps, progress=False)


def test_resume_continues_exactly(tmp_path):
    cfg = LoopConfig(epochs=8, lr=5e-3, patience=50, seed=3)
    model, loss_fn, batches, validate, steps = _setup()
    full = train(model, loss_fn, batches, validate, cfg, steps, progress=False)

    ckpt = tmp_path / "run.ckpt"
    model2, loss_fn, batches, validate2, steps = _setup()
    calls = {"n": 0}

    def interrupting_validate(m):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # Ctrl-C during epoch 5's validation
        return validate2(m)

    with pytest.raises(KeyboardInterrupt):
        train(model2, loss_fn, batches, interrupting_validate, cfg, steps, checkpoint=ckpt, progress=False)
    model3, loss_fn, batches, validate3, steps = _setup()
    res = train(model3, loss_fn, batches, validate3, cfg, steps, checkpoint=ckpt, resume=True, progress=False)
    assert res.resumed_from == 4 and len(res.history) == 8
    for a, b in zip(model.state_dict().values(), model3.state_dict().values()):
        torch.testing.assert_close(a, b)
    # a checkpoint from another configuration is refused with a clear message
    from campusgps.errors import UserError

    with pytest.raises(UserError, match="different configuration"):
        train(model3, loss_fn, batches, validate3, LoopConfig(epochs=9), steps, checkpoint=ckpt, resume=True,
              progress=False)


def test_warmup_then_cosine():
    lrs = [lr_lambda(s, 100, 10, 0.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.01


def test_early_stopping_restores_best():
    model, loss_fn, batches, validate, steps = _setup()
    res = train(model, loss_fn, batches, validate, LoopConfig(epochs=200, lr=1e-2, patience=3), steps, progress=False)
    assert res.stopped_early and res.epochs_run < 200
    assert validate(model)["median_m"] == pytest.approx(res.best_val)


def test_augmentation_is_geolocation_safe():
    from campusgps.models.augment import Augmenter, night

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:128]
    img = np.stack([xx * 2, yy * 2, (xx + yy)], -1).clip(0, 255).astype(np.uint8)  # left-right asymmetric
    aug = Augmenter(p_erase=0, p_gray=0, p_night=0)
    for _ in range(5):
        out = aug(img, rng)
        assert out.shape == img.shape and out.dtype == np.uint8
        # never mirrored: red still grows left -> right
        assert out[:, -20:, 0].mean() > out[:, :20, 0].mean()
    dark = night(img.astype(np.float32), rng)
    assert dark.mean() < 0.7 * img.mean() and dark.std() < img.std()
    assert Augmenter().key != Augmenter(rotation_deg=10).key


def test_ddp_two_cpu_processes_learn(tmp_path):
    """--devices 2: two gloo processes train the head; the result beats the mean baseline."""
    from conftest import make_toy_dataset

    from campusgps.localizers.base import MeanLocalizer
    from campusgps.localizers.regression import RegressionLocalizer

    ds = make_toy_dataset(tmp_path / "toy", n_spots=16, views=4, extent_m=20.0)
    loc = RegressionLocalizer(backbone="tiny-cnn", devices=2, epochs=40, views=1, batch_size=32,
                              patience=40).fit(ds, progress=False)
    test = ds.subset("test")
    p = loc.predict(test.paths())
    err = np.hypot(p.east - test.en()[:, 0], p.north - test.en()[:, 1])
    base = MeanLocalizer().fit(ds).predict(test.paths())
    berr = np.hypot(base.east - test.en()[:, 0], base.north - test.en()[:, 1])
    assert np.median(err) < 0.7 * np.median(berr)
    assert loc.info["training"]["epochs_run"] >= 1


def test_select_last_runs_whole_schedule():
    model, loss_fn, batches, validate, steps = _setup()
    res = train(model, loss_fn, batches, validate, LoopConfig(epochs=6, lr=1e-2, patience=1, select="last"), steps,
                progress=False)
    assert res.epochs_run == 6 and res.best_epoch == 6 and not res.stopped_early
    assert res.best_val == res.history[-1]["median_m"]
