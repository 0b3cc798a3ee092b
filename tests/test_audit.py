"""campusgps audit: the active-learning loop lowers the error on a dataset with injected label errors."""
import json

import numpy as np
import pandas as pd
import pytest

from campusgps.cli.main import main
from campusgps.dataset import Dataset
from campusgps.evaluation.audit import AUDIT_COLUMNS
from campusgps.localizers.base import Localizer, Prediction, register

from conftest import make_toy_dataset


@register
class PixelNN(Localizer):
    """Nearest neighbour on 16x12 pixels: a cheap stand-in for retrieval, public interface only."""

    method = "test-pixel-nn"

    def fit(self, dataset, **opts):
        train = dataset.subset("train")
        self.frame = dataset.frame
        self.feats = np.stack([self._feat(train.load_image(i)) for i in range(len(train))])
        self.en = train.en()
        self.ids = list(train.manifest["id"])
        return self

    @staticmethod
    def _feat(img):
        from PIL import Image

        f = np.asarray(Image.fromarray(img).resize((16, 12)), dtype=np.float32).ravel()
        return (f - f.mean()) / (f.std() + 1e-6)

    def _predict_arrays(self, images):
        q = np.stack([self._feat(a) for a in images])
        d = ((q[:, None, :] - self.feats[None]) ** 2).sum(-1)
        j = d.argmin(axis=1)
        nbs = [[{"id": self.ids[k], "east": float(self.en[k, 0]), "north": float(self.en[k, 1]), "score": 1.0}]
               for k in j]
        return Prediction(east=self.en[j, 0], north=self.en[j, 1], radius_m=np.full(len(j), 20.0), neighbors=nbs)

    def _state(self):
        return {"feats": self.feats, "en": self.en}, {"ids": self.ids}

    @classmethod
    def _from_state(cls, tensors, meta):
        loc = cls()
        loc.feats, loc.en, loc.ids = tensors["feats"], tensors["en"], list(meta["ids"])
        return loc


def _test_error(model_path, root, out):
    assert main(["evaluate", str(model_path), str(root), "--out", str(out), "--robustness-n", "0"]) == 0
    return json.loads((out / "metrics.json").read_text())["mean_m"]


def test_audit_loop_fixes_injected_label_errors(tmp_path, capsys):
    ds = make_toy_dataset(tmp_path / "ds", n_spots=40, views=1, seed=3)
    m = ds.manifest
    train = np.flatnonzero((m["split"] == "train").to_numpy())
    bad = np.random.default_rng(0).choice(train, size=4, replace=False)
    bad_ids = set(m["id"].iloc[bad])
    for i in bad:  # gross label errors: 120-180 m away
        ang = np.random.default_rng(int(i)).uniform(0, 2 * np.pi)
        e, n = m.at[i, "east_m"] + 150 * np.cos(ang), m.at[i, "north_m"] + 150 * np.sin(ang)
        lat, lon = ds.frame.to_wgs84(e, n)
        m.loc[i, ["east_m", "north_m", "lat", "lon"]] = [e, n, float(lat), float(lon)]
    ds.save()
    model = PixelNN().fit(ds).save(tmp_path / "nn.cgps")
    before = _test_error(model, ds.root, tmp_path / "ev1")

    out = tmp_path / "review"
    assert main(["audit", str(model), str(ds.root), "--out", str(out), "--worst", "8"]) == 0
    assert "audit.html" in capsys.readouterr().out
    a = pd.read_csv(out / "audit.csv", dtype=str, keep_default_na=False)
    assert list(a.columns[:len(AUDIT_COLUMNS)]) == AUDIT_COLUMNS and len(a) == 8
    assert (a["decision"] == "").all()
    assert bad_ids <= set(a["id"])  # every injected error is among the 8 worst
    assert a["predicted_by"][a["split"] == "train"].str.startswith("out-of-fold").all()
    html = (out / "audit.html").read_text()
    assert html.count("class=\"acase\"") == 8 and "data:image/jpeg;base64," in html

    # a person reviews: wrong labels get the true position, the rest are kept
    truth = Dataset.open(ds.root).manifest.set_index("id")
    for k, sid in enumerate(a["id"]):
        if sid in bad_ids:
            a.loc[k, ["decision", "new_lat", "new_lon"]] = ["relabel", str(truth.at[sid, "true_lat"]),
                                                            str(truth.at[sid, "true_lon"])]
        else:
            a.loc[k, "decision"] = "keep"
    a.to_csv(out / "audit.csv", index=False)
    assert main(["split", str(ds.root), "--apply-audit", str(out / "audit.csv")]) == 0
    fixed = Dataset.open(ds.root)
    assert fixed.manifest.set_index("id").loc[list(bad_ids), "corrected"].all()
    model2 = PixelNN().fit(fixed).save(tmp_path / "nn2.cgps")
    after = _test_error(model2, ds.root, tmp_path / "ev2")
    assert after < before * 0.8, (before, after)


def test_audit_bad_arguments(tmp_path, capsys):
    ds = make_toy_dataset(tmp_path / "ds", n_spots=8, views=1)
    model = PixelNN().fit(ds).save(tmp_path / "nn.cgps")
    assert main(["audit", str(model), str(ds.root), "--out", str(tmp_path / "o"), "--cross-fit", "1"]) == 2
    assert "--cross-fit" in capsys.readouterr().err
    assert main(["audit", str(tmp_path / "missing.cgps"), str(ds.root), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
