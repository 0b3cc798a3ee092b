"""campusgps.jsonio: numpy values and NaN become loadable JSON; files are written whole."""
import json
import math

import numpy as np

from campusgps.jsonio import finite_or_none, jsonable, write_json


def test_jsonable_numpy_nan_and_unknown_values():
    v = jsonable({"a": np.float32(1.5), "b": np.int64(3), "c": np.bool_(True), "d": float("nan"),
                  "e": (1, np.inf), "f": np.arange(3), "g": b"raw", 4: object.__new__(type("X", (), {}))})
    assert v["a"] == 1.5 and v["b"] == 3 and v["c"] is True and v["d"] is None
    assert v["e"] == [1, None] and v["f"] == [0, 1, 2] and v["g"] is None and isinstance(v["4"], str)
    json.dumps(v, allow_nan=False)


def test_jsonable_caps_depth_and_length():
    assert jsonable(list(range(100)), max_items=64) == list(range(64))
    assert jsonable(np.zeros(65), max_items=64) is None
    assert jsonable({"a": {"b": {"c": 1}}}, max_depth=3) == {"a": {"b": {"c": 1}}}
    assert jsonable({"a": {"b": {"c": 1}}}, max_depth=2) == {"a": {"b": {"c": None}}}


def test_finite_or_none():
    assert finite_or_none("2.5") == 2.5 and finite_or_none(np.float64(-1)) == -1.0
    assert finite_or_none(math.inf) is None and finite_or_none("x") is None and finite_or_none(None) is None


def test_write_json_is_strict_json_and_leaves_no_tmp(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"median_m": np.float64(np.nan), "n": np.int32(2)})
    assert json.loads(path.read_text()) == {"median_m": None, "n": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
