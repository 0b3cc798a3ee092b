"""`campusgps index add`: a new place becomes findable without retraining; bad bundles are refused."""
import numpy as np
import pytest

from campusgps import Localizer
from campusgps.cli.main import main
from conftest import make_toy_dataset


@pytest.fixture(scope="module")
def model_and_new(tmp_path_factory):
    from campusgps.localizers.retrieval import RetrievalLocalizer

    root = tmp_path_factory.mktemp("idx")
    ds = make_toy_dataset(root / "old", n_spots=12, views=4, seed=0, extent_m=40)
    new = make_toy_dataset(root / "new", n_spots=3, views=4, seed=7, extent_m=40)
    # the new place: far from everything the model knows (shift the labels 500 m east)
    m = new.manifest
    m["east_m"] += 500.0
    m["lat"], m["lon"] = new.frame.to_wgs84(m["east_m"].to_numpy(), m["north_m"].to_numpy())
    new.save()
    path = RetrievalLocalizer(backbone="tiny-cnn", finetune="off").fit(ds).save(root / "m.cgps")
    return path, new, root


def test_index_add_makes_new_place_findable(model_and_new, tmp_path, capsys):
    path, new, root = model_and_new
    # queries: new photos of the new place (the mapping photos re-shot: noise + exposure change)
    rng = np.random.default_rng(1)
    query = [np.clip(new.load_image(i).astype(float) * 0.9 + rng.normal(0, 6, new.load_image(i).shape), 0,
                     255).astype(np.uint8) for i in range(len(new))]
    truth = new.en()
    before = Localizer.load(path).predict(query)
    assert np.median(np.hypot(before.east - truth[:, 0], before.north - truth[:, 1])) > 400
    files = [str(p) for p in new.paths()[:9]]
    out = tmp_path / "m2.cgps"
    assert main(["index", "add", str(path), *files, "--out", str(out)]) == 0
    assert "added 9" in capsys.readouterr().out
    assert main(["index", "add", str(out), str(new.root)]) == 0  # the whole dataset: only 3 are new
    assert "added 3 of 12" in capsys.readouterr().out
    after = Localizer.load(out)
    assert len(after.ref_ids) == len(Localizer.load(path).ref_ids) + 12
    p = after.predict(query)
    assert np.median(np.hypot(p.east - truth[:, 0], p.north - truth[:, 1])) < 30
    assert p.neighbors[0][0]["id"] in set(new.manifest["id"])
    assert after.reference_thumbnail(p.neighbors[0][0]["id"])[:2] == b"\xff\xd8"
    # adding the same photos again adds nothing
    assert main(["index", "add", str(out), *files]) == 0
    assert "added 0" in capsys.readouterr().out


def test_index_add_refuses_bad_inputs(model_and_new, tmp_path, capsys):
    from campusgps.localizers.base import MeanLocalizer

    path, new, root = model_and_new
    mean = MeanLocalizer().fit(new).save(tmp_path / "mean.cgps")
    assert main(["index", "add", str(mean), str(new.root)]) == 2
    assert "no reference index" in capsys.readouterr().err
    junk = tmp_path / "junk.cgps"
    junk.write_bytes(b"junk")
    assert main(["index", "add", str(junk), str(new.root)]) == 2
    assert "not a campusgps model bundle" in capsys.readouterr().err
    loose = tmp_path / "loose.jpg"
    loose.write_bytes(new.paths()[0].read_bytes())
    assert main(["index", "add", str(path), str(loose)]) == 2
    assert "ingest" in capsys.readouterr().err
    assert main(["index", "info", str(path)]) == 0
    assert '"n_references"' in capsys.readouterr().out
