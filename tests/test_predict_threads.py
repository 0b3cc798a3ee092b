"""One fitted model shared by several threads (the server's inference threads): every answer equals the
single-threaded one, and predicting leaves the model unchanged."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import make_toy_dataset


def _answers(p):
    return (p.lat.tolist(), p.lon.tolist(), p.radius_m.tolist(), [sorted(f) for f in p.flags],
            [[d.get("id") for d in nb] for nb in p.neighbors])


def _state(loc):
    return (id(loc._index), id(loc._aug_index), loc.ref_desc.copy(), loc.aug_of.copy(), dict(loc.fusion),
            dict(loc.calib), len(loc.ref_ids))


def _check_threads(loc, images):
    """8 jobs on 4 threads, each a different slice/order of the images, vs the same calls one by one."""
    jobs = [images[i:] + images[:i] for i in range(8)]
    before = _state(loc)
    single = [_answers(loc.predict(j, batch_size=3)) for j in jobs]
    with ThreadPoolExecutor(max_workers=4) as ex:
        threaded = list(ex.map(lambda j: _answers(loc.predict(j, batch_size=3)), jobs * 2))
    assert threaded == single * 2
    after = _state(loc)
    assert after[:2] == before[:2] and np.array_equal(after[2], before[2]) and np.array_equal(after[3], before[3])
    assert after[4:] == before[4:]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("thr") / "toy", n_spots=12, views=4, size=(160, 120))


def _queries(ds):
    """Test photos plus darkened copies: with night_query_lum set, one batch mixes queries that search the
    low-light views with queries that search the plain references only (the path that used to toggle state)."""
    from campusgps.localizers.retrieval import low_light_view

    test = ds.subset("test")
    imgs = [test.load_image(i) for i in range(len(test))]
    return imgs + [low_light_view(im, "night", np.random.default_rng(i)) for i, im in enumerate(imgs[:4])]


def test_retrieval_predicts_the_same_from_many_threads(toy):
    from campusgps.localizers.retrieval import RetrievalLocalizer

    loc = RetrievalLocalizer(backbone="tiny-cnn", finetune="off", night_views=2).fit(toy)
    loc.cfg.night_query_lum = 60.0
    imgs = _queries(toy)
    assert 0 < loc._dark_queries(imgs).sum() < len(imgs)  # both kinds of queries in one batch
    _check_threads(loc, imgs)


def test_hybrid_predicts_the_same_from_many_threads(toy):
    from campusgps.localizers.hybrid import HybridLocalizer

    loc = HybridLocalizer(backbone="tiny-cnn", finetune="off", shortlist=10, thumbnails=False).fit(toy)
    _check_threads(loc, _queries(toy))
