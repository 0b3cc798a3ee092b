"""The Localizer interface itself, exercised through the mean-position baseline."""
import numpy as np
import pytest

from campusgps import Localizer
from campusgps.errors import BundleError
from campusgps.localizers.base import MeanLocalizer


def test_mean_baseline_roundtrip_and_bad_files(toy_dataset, tmp_path):
    loc = MeanLocalizer().fit(toy_dataset)
    path = loc.save(tmp_path / "m.cgps")
    loaded = Localizer.load(path)
    paths = toy_dataset.paths()[:2]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    p = loaded.predict([*paths, bad, toy_dataset.load_image(0)])
    assert np.isfinite(p.lat[[0, 1, 3]]).all() and np.isnan(p.lat[2])
    assert "not an image" in p.errors[2]
    train = toy_dataset.subset("train").latlon().mean(axis=0)
    assert np.allclose(loaded.predict_gps(toy_dataset.load_image(0)), train, atol=1e-5)


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        Localizer.load(tmp_path / "nope.cgps")
    junk = tmp_path / "junk.cgps"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(BundleError, match="not a campusgps model bundle"):
        Localizer.load(junk)


def test_fit_options_override_config_and_unknown_ones_are_refused(toy_dataset):
    from campusgps.errors import UserError
    from campusgps.localizers.retrieval import RetrievalLocalizer

    with pytest.raises(UserError, match="unknown option"):
        MeanLocalizer().fit(toy_dataset, epochs=3)
    # every method applies fit(**opts) to its Config, not only regression
    loc = RetrievalLocalizer(backbone="tiny-cnn", finetune="off", thumbnails=False)
    with pytest.raises(UserError, match="unknown option.*no_such_option"):
        loc.fit(toy_dataset, no_such_option=1)
    loc.fit(toy_dataset, k=3)
    assert loc.cfg.k == 3 and loc.config["k"] == 3
