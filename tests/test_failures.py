"""Why the wrong answers are wrong: one cause per wrong answer, in metrics.json, predictions.csv and the report."""
import json

import numpy as np
import pandas as pd
import pytest

from campusgps.evaluation.failures import CAUSES, failure_causes, failure_section, failure_summary
from conftest import make_toy_dataset


def _nb(e, n, **kw):
    return {"east": float(e), "north": float(n), "score": 0.5, **kw}


def test_each_wrong_answer_gets_the_cause_its_evidence_shows():
    refs = np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0], [300.0, 0.0]])
    pos = np.array([[0, 0], [1000, 1000], [100, 0], [200, 0], [300, 0], [0, 5], [np.nan, np.nan], [300, 0]], float)
    err = np.array([3.0, 900.0, 150.0, 80.0, 60.0, 45.0, np.nan, np.nan])
    nbs = [
        [_nb(0, 0)],                                              # right answer: no cause
        [_nb(0, 0)],                                              # nothing mapped near (1000, 1000)
        [_nb(300, 0, inliers=40, verified=True), _nb(200, 0)],    # a reference is near (100, 0), none shown
        [_nb(0, 0, inliers=30, verified=True),                    # the right one was found but did not verify
         _nb(205, 3, inliers=5, verified=False)],
        [_nb(100, 0, inliers=60, verified=True),                  # right one verified, a look-alike won
         _nb(296, 0, inliers=20, verified=True)],
        [_nb(100, 0), _nb(2, 4)],                                 # retrieval: right neighbour, answer elsewhere
        [_nb(0, 0)],                                              # no truth for this photo
        [],                                                       # unreadable photo
    ]
    causes = failure_causes(pos, err, nbs, refs)
    assert causes == ["", "unmapped", "not_found", "not_verified", "outvoted", "outvoted", "", ""]
    # without the reference positions nobody can say the place is unmapped
    assert failure_causes(pos, err, nbs)[1] == "not_found"
    # a wider notion of "right" turns the 45 m answer into a right one
    assert failure_causes(pos, err, nbs, refs, right_m=50.0)[5] == ""

    conf = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5, np.nan, np.nan])
    s = failure_summary(causes, err, ["day", "night", "night", "night", "day", "day", "day", "night"], "truth",
                        confidence=conf)
    assert s["median_confidence"] == {"right": 0.9, "unmapped": 0.1, "not_found": 0.2, "not_verified": 0.3,
                                      "outvoted": pytest.approx(0.45)}
    assert (s["n"], s["n_wrong"]) == (6, 5)
    assert sum(s[c] for c in CAUSES) == s["n_wrong"]
    assert s["by_condition"]["night"] == {"n": 3, "n_wrong": 3, "unmapped": 1, "not_found": 1, "not_verified": 1,
                                          "outvoted": 0}
    html = failure_section({"failures": s})
    assert "Why the wrong answers are wrong" in html and "5 of 6 answers" in html and "true position" in html
    assert "not verified" in html and "Causes by condition" in html and "median confidence" in html
    assert failure_section({}) == ""


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from campusgps.evaluation import evaluate
    from campusgps.localizers.base import MeanLocalizer
    from campusgps.localizers.retrieval import RetrievalLocalizer

    root = tmp_path_factory.mktemp("fail")
    ds = make_toy_dataset(root / "ds", n_spots=16, views=4, extent_m=300.0)
    ret = RetrievalLocalizer(backbone="tiny-cnn", ft_steps=20).fit(ds)
    out = {}
    for name, loc in (("retrieval", ret), ("mean", MeanLocalizer().fit(ds))):
        evaluate(loc, ds, split="all", out_dir=root / name, robustness=False, progress=False)
        out[name] = (json.loads((root / name / "metrics.json").read_text()), pd.read_csv(root / name / "predictions.csv"),
                     (root / name / "report.html").read_text())
    return out


def test_evaluate_says_why_each_wrong_answer_is_wrong(evaluated):
    m, p, html = evaluated["retrieval"]
    f = m["failures"]
    wrong = p["error_m"] > 20
    assert wrong.any(), "the toy campus must leave some answers wrong for this test to mean anything"
    assert f["n_wrong"] == int(wrong.sum()) and f["against"] == "labels"
    assert sum(f[c] for c in CAUSES) == f["n_wrong"]
    causes = p["failure"].fillna("")
    assert (causes[wrong] != "").all() and (causes[~wrong] == "").all()
    assert set(causes[wrong]) <= set(CAUSES) - {"not_verified"}  # retrieval verifies nothing
    assert "Why the wrong answers are wrong" in html


def test_a_model_without_neighbours_gets_no_failure_breakdown(evaluated):
    m, p, html = evaluated["mean"]
    assert "failures" not in m
    assert p["failure"].isna().all()  # an empty column
    assert "Why the wrong answers are wrong" not in html
