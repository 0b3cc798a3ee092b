"""Bring your own backbone: ``--backbone onnx:PATH`` with a tiny conv net the test exports itself."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

from campusgps.errors import BundleError, UserError
from campusgps.models.backbones import get_backbone


def _net(kind: str, seed: int = 0):
    """A tiny conv net; kind: maps (N,16,h,w), vector (N,16), rank3out (N,16,h*w), rank3in (Conv1d input)."""
    import torch
    import torch.nn as nn

    torch.manual_seed(seed)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            conv = nn.Conv1d if kind == "rank3in" else nn.Conv2d
            self.body = nn.Sequential(conv(3, 8, 3, 2, 1), nn.ReLU(), conv(8, 16, 3, 2, 1), nn.ReLU())

        def forward(self, x):
            y = self.body(x)
            if kind == "vector":
                return y.mean((2, 3))
            if kind == "rank3out":
                return y.flatten(2)
            return y

    return Net().eval()


def export(path, kind: str = "maps", size=(32, 32), dynamic_hw: bool = False, seed: int = 0, settings=None):
    """Export a tiny net to ``path`` (input ``img`` N,3,H,W float32) and optionally write PATH.json."""
    import torch

    net = _net(kind, seed)
    x = torch.zeros((1, 3, size[0]) if kind == "rank3in" else (1, 3) + tuple(size))
    axes = {"img": {0: "n", 2: "h", 3: "w"} if dynamic_hw else {0: "n"}, "out": {0: "n"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), input_names=["img"], output_names=["out"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    if settings is not None:
        path.with_name(path.name + ".json").write_text(json.dumps(settings))
    return net


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    nets = {"maps": export(d / "maps.onnx", "maps", dynamic_hw=True, settings={"input_size": 48, "output": "maps"}),
            "vector": export(d / "vector.onnx", "vector")}
    return d, nets


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from conftest import make_toy_dataset

    return make_toy_dataset(tmp_path_factory.mktemp("byo") / "toy", n_spots=16, views=4, extent_m=40.0)


def _images(n=3):
    return [np.random.default_rng(i).integers(0, 255, (40, 52, 3), dtype=np.uint8) for i in range(n)]


def test_maps_and_vector_models_follow_their_settings(models):
    import torch

    d, nets = models
    maps = get_backbone(f"onnx:{d / 'maps.onnx'}", device="cpu")
    assert (maps.output_kind, maps.feature_dim, maps.input_hw) == ("maps", 16, (48, 48))  # size from the JSON
    vec = get_backbone(f"onnx:{d / 'vector.onnx'}", device="cpu")
    assert (vec.output_kind, vec.feature_dim, vec.input_hw) == ("vector", 16, (32, 32))  # size from the graph
    assert maps.key.startswith("onnx-") and maps.key != vec.key
    # BGR, 0-255, own mean/std (overrides): the numbers the net sees are exactly what the settings say
    bgr = get_backbone(f"onnx:{d / 'vector.onnx'}", device="cpu",
                       options=["channels=BGR", "range=0-255", "mean=10,20,30", "std=50,60,70"])
    ims = _images()
    batch = bgr.preprocess(ims).astype(np.float32)[..., ::-1]
    x = (batch - np.array([10, 20, 30], np.float32)) / np.array([50, 60, 70], np.float32)
    with torch.no_grad():
        want = nets["vector"](torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    np.testing.assert_allclose(bgr.embed(ims), want, rtol=1e-4, atol=1e-5)
    assert bgr.key != vec.key  # settings are part of the identity (feature cache folder)
    # maps are pooled: gap = mean, gem = GeM p=3; feature_maps gives them as they are
    m = maps.feature_maps(ims)
    assert m.shape == (3, 16, 12, 12)
    np.testing.assert_allclose(maps.embed(ims, pooling="gap"), m.mean((2, 3)), rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="global vector"):
        vec.feature_maps(ims)


def test_precedence_options_over_json_over_defaults(models):
    d, _ = models
    p = d / "maps.onnx"
    bb = get_backbone(f"onnx:{p}", device="cpu", options={"input_size": "40x56"})
    assert bb.input_hw == (40, 56) and bb.settings["output"] == "maps"  # option wins, JSON still applies
    assert bb.settings["mean"] == [0.485, 0.456, 0.406]  # default
    with pytest.raises(UserError, match="onnx:PATH backbones only"):
        get_backbone("tiny-cnn", options=["input_size=64"])


@pytest.mark.parametrize("case, match", [
    ("missing", "ONNX model not found: .*nothere.onnx"),
    ("bad_json", r"broken.onnx.json: not valid JSON \(line 1"),
    ("unknown_key", r"odd.onnx.json: unknown setting 'size'"),
    ("bad_value", r"layout must be one of NCHW, NHWC"),
    ("rank3_input", r"r3in.onnx: input 'img' has rank 3"),
    ("rank3_output", r"r3out.onnx: output 'out' has shape \[2, 16, 64\]"),
    ("declared_vector", r"dyn.onnx: output 'out' is maps .* \"output\": \"vector\""),
    ("dynamic_no_size", r"dyn.onnx: the model's input size is not fixed"),
    ("size_mismatch", r"vector.onnx: input_size \[64, 64\] does not match the graph's fixed input \[32, 32\]"),
    ("nhwc_wrong", r"vector.onnx: input 'img' shape .* NHWC puts them"),
    ("bad_option", r"--backbone-opt 'input_size': use KEY=VALUE"),
    ("not_onnx", r"junk.onnx: ONNX Runtime cannot load it"),
])
def test_unusable_models_and_settings_are_user_errors(models, tmp_path, case, match):
    d, _ = models
    name, opts = None, None
    if case == "missing":
        name = f"onnx:{tmp_path / 'nothere.onnx'}"
    elif case in ("bad_json", "unknown_key", "bad_value"):
        p = tmp_path / {"bad_json": "broken", "unknown_key": "odd", "bad_value": "val"}[case]
        p = p.with_suffix(".onnx")
        shutil.copy(d / "vector.onnx", p)
        p.with_name(p.name + ".json").write_text({"bad_json": "{input_size: 32}", "unknown_key": '{"size": 32}',
                                                  "bad_value": '{"layout": "CHW"}'}[case])
        name = f"onnx:{p}"
    elif case == "rank3_input":
        export(tmp_path / "r3in.onnx", "rank3in")
        name = f"onnx:{tmp_path / 'r3in.onnx'}"
    elif case == "rank3_output":
        export(tmp_path / "r3out.onnx", "rank3out")
        name = f"onnx:{tmp_path / 'r3out.onnx'}"
    elif case in ("declared_vector", "dynamic_no_size"):
        export(tmp_path / "dyn.onnx", "maps", dynamic_hw=True)
        name = f"onnx:{tmp_path / 'dyn.onnx'}"
        opts = ["output=vector", "input_size=32"] if case == "declared_vector" else None
    elif case in ("size_mismatch", "nhwc_wrong", "bad_option"):
        name = f"onnx:{d / 'vector.onnx'}"
        opts = {"size_mismatch": ["input_size=64"], "nhwc_wrong": ["layout=NHWC"], "bad_option": ["input_size"]}[case]
    elif case == "not_onnx":
        (tmp_path / "junk.onnx").write_bytes(b"not a model")
        name = f"onnx:{tmp_path / 'junk.onnx'}"
    with pytest.raises(UserError, match=match):
        get_backbone(name, device="cpu", options=opts)


def test_cli_bad_backbone_exits_2_naming_the_file(toy, tmp_path, capsys):
    from campusgps.cli.main import main

    p = tmp_path / "gone.onnx"
    rc = main(["train", str(toy.root), "--method", "retrieval", "--backbone", f"onnx:{p}", "--out",
               str(tmp_path / "m.cgps")])
    err = capsys.readouterr().err
    assert rc == 2 and str(p) in err and "Traceback" not in err


def test_feature_cache_is_keyed_by_the_model_hash(models, toy, tmp_path):
    from campusgps.models.features import FeatureCache

    p = tmp_path / "m.onnx"
    export(p, "maps", seed=1)
    bb = get_backbone(f"onnx:{p}", device="cpu")
    cache = FeatureCache(tmp_path / "cache")
    f1 = cache.get(toy, bb, pooling="gem", progress=False)
    assert f1.shape == (len(toy), 16) and (tmp_path / "cache" / bb.key / "gem-v0" / "data.f32").exists()
    from campusgps.models.backbones import _file_sha256

    assert bb.key.startswith(f"onnx-{_file_sha256(str(p))[:16]}")
    export(p, "maps", seed=2)  # other weights, same path: another key, other features
    bb2 = get_backbone(f"onnx:{p}", device="cpu")
    assert bb2.key != bb.key
    f2 = cache.get(toy, bb2, pooling="gem", progress=False)
    assert not np.allclose(f1, f2)
    np.testing.assert_array_equal(cache.get(toy, bb, pooling="gem", progress=False), f1)  # still served


@pytest.fixture(scope="module")
def retrieval(models, toy, tmp_path_factory):
    from campusgps.localizers.retrieval import RetrievalLocalizer

    d = tmp_path_factory.mktemp("ret")
    src = d / "maps.onnx"
    shutil.copy(models[0] / "maps.onnx", src)
    shutil.copy(models[0] / "maps.onnx.json", d / "maps.onnx.json")
    loc = RetrievalLocalizer(backbone=f"onnx:{src}", ft_steps=20, night_views=1, thumbnails=False).fit(toy)
    return loc, src


def test_retrieval_trains_predicts_and_round_trips_self_contained(retrieval, toy, tmp_path):
    from campusgps.localizers.base import Localizer

    loc, src = retrieval
    test = toy.subset("test")
    p1 = loc.predict(test.paths())
    assert np.isfinite(p1.lat).all()
    err = np.hypot(p1.east - test.en()[:, 0], p1.north - test.en()[:, 1])
    assert np.median(err) < 20.0  # toy campus 40 m across; mean-position guess is ~14 m median
    out = tmp_path / "m.cgps"
    loc.save(out)
    meta = Localizer.read_metadata(out)["state"]["backbone_onnx"]
    assert meta["embedded"] and meta["sha256"] and meta["settings"]["input_size"] == [48, 48]
    moved = tmp_path / "elsewhere.onnx"
    shutil.move(src, moved)  # the bundle carries the model: moving the file does not matter
    try:
        back = Localizer.load(out)
        p2 = back.predict(test.paths())
    finally:
        shutil.move(moved, src)
    np.testing.assert_allclose(p2.lat, p1.lat, atol=1e-9)
    np.testing.assert_allclose(p2.radius_m, p1.radius_m, rtol=1e-6)


def test_large_model_is_referenced_and_a_moved_or_changed_file_is_a_clear_error(retrieval, toy, tmp_path,
                                                                                 monkeypatch):
    from campusgps.localizers.base import Localizer
    from campusgps.models import onnx_backbone

    loc, src = retrieval
    monkeypatch.setattr(onnx_backbone, "EMBED_MAX_BYTES", 0)  # as if the model were over 50 MiB
    out = tmp_path / "ref.cgps"
    loc.save(out)
    assert not Localizer.read_metadata(out)["state"]["backbone_onnx"]["embedded"]
    back = Localizer.load(out)
    q = toy.subset("test").paths()[:2]
    np.testing.assert_allclose(back.predict(q).lat, loc.predict(q).lat, atol=1e-9)
    saved = src.read_bytes()
    try:
        src.unlink()
        with pytest.raises(BundleError, match=f"uses the ONNX backbone {src}.*missing; put the same file back"):
            Localizer.load(out)
        export(src, "maps", dynamic_hw=True, seed=5)
        with pytest.raises(BundleError, match="changed since this model was trained"):
            Localizer.load(out)
    finally:
        src.write_bytes(saved)


def test_regression_on_a_vector_model_round_trips_and_refuses_finetuning(models, toy, tmp_path):
    from campusgps.localizers.base import Localizer
    from campusgps.localizers.regression import RegressionLocalizer

    name = f"onnx:{models[0] / 'vector.onnx'}"
    loc = RegressionLocalizer(backbone=name, epochs=3, views=0).fit(toy, progress=False)
    assert loc.info["backbone"]["output_kind"] == "vector"
    out = tmp_path / "reg.cgps"
    loc.save(out)
    q = toy.subset("test").paths()[:3]
    np.testing.assert_allclose(Localizer.load(out).predict(q).lat, loc.predict(q).lat, atol=1e-9)
    with pytest.raises(UserError, match="frozen"):
        RegressionLocalizer(backbone=name, finetune="top-1", epochs=1).fit(toy, progress=False)


def test_cli_train_and_predict_with_backbone_opt(models, toy, tmp_path, capsys):
    from campusgps.cli.main import main

    p = tmp_path / "plain.onnx"
    export(p, "maps", dynamic_hw=True)  # no JSON: the size comes from --backbone-opt
    out = tmp_path / "m.cgps"
    rc = main(["train", str(toy.root), "--method", "retrieval", "--backbone", f"onnx:{p}", "--backbone-opt",
               "input_size=40", "--backbone-opt", "output=maps", "--finetune", "off", "--night-views", "0",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    csv_out = tmp_path / "p.csv"
    assert main(["predict", str(out), str(toy.paths()[0]), "--out", str(csv_out)]) == 0
    assert len(csv_out.read_text().strip().splitlines()) == 2


def test_hybrid_uses_an_onnx_backbone_and_round_trips(models, toy, tmp_path):
    from campusgps.localizers.base import Localizer
    from campusgps.localizers.hybrid import HybridLocalizer

    loc = HybridLocalizer(backbone=f"onnx:{models[0] / 'vector.onnx'}", finetune="off", shortlist=8,
                          night_views=0, thumbnails=False).fit(toy)
    out = tmp_path / "hy.cgps"
    loc.save(out)
    q = toy.subset("test").paths()[:4]
    p1, p2 = loc.predict(q), Localizer.load(out).predict(q)
    assert np.isfinite(p1.lat).all()
    np.testing.assert_allclose(p2.lat, p1.lat, atol=1e-9)
    assert Localizer.read_metadata(out)["state"]["backbone_onnx"]["settings"]["output"] == "vector"


def test_nhwc_model_gives_the_same_features_as_its_nchw_twin(models, tmp_path):
    import torch

    net = _net("vector", seed=0)  # the same weights as vector.onnx

    class Nhwc(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x.permute(0, 3, 1, 2))

    p = tmp_path / "nhwc.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Nhwc().eval(), (torch.zeros(1, 32, 32, 3),), str(p), input_names=["img"],
                          output_names=["out"], dynamic_axes={"img": {0: "n"}, "out": {0: "n"}}, opset_version=17,
                          dynamo=False)
    with pytest.raises(UserError, match="looks like NHWC"):
        get_backbone(f"onnx:{p}", device="cpu")
    nhwc = get_backbone(f"onnx:{p}", device="cpu", options={"layout": "nhwc"})
    nchw = get_backbone(f"onnx:{models[0] / 'vector.onnx'}", device="cpu")
    np.testing.assert_allclose(nhwc.embed(_images()), nchw.embed(_images()), rtol=1e-5, atol=1e-6)
