"""No traceback reaches a user: an internal error is one line on stderr plus a log file."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from campusgps.cli.main import main
from campusgps.logs import crash_line, log_dirs, step, step_of, write_crash_log


def _boom(*a, **k):
    raise RuntimeError("kaboom\nsecond line")


def test_internal_error_is_one_line_and_a_log(tmp_path, capsys, monkeypatch):
    from campusgps.localizers import regression
    from conftest import make_toy_dataset

    ds = make_toy_dataset(tmp_path / "toy", n_spots=4, views=2)
    out = tmp_path / "models" / "m.cgps"
    out.parent.mkdir()
    # provoke a bug where users meet it: inside the train command's "training" step
    monkeypatch.setattr(regression.RegressionLocalizer, "fit", _boom)
    rc = main(["train", str(ds.root), "--method", "regression", "--backbone", "tiny-cnn", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and "Traceback" not in err[0], err
    line = err[0]
    assert line.startswith("campusgps train: internal error while training regression")
    assert f"({ds.root})" in line and "RuntimeError: kaboom second line" in line
    log = Path(re.search(r"full traceback in (\S+)", line).group(1))
    assert log.parent == out.parent / ".logs" and log.is_file()
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "_boom" in text and "kaboom" in text
    assert "step: training regression" in text and f"input: {ds.root}" in text
    assert "campusgps train " in text  # the command line


def test_bad_input_still_exits_2_without_log(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rc = main(["train", str(tmp_path / "nope"), "--out", str(tmp_path / "m.cgps")])
    assert rc == 2 and "error:" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.log"))


def test_log_falls_back_when_out_is_not_writable(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the folder should be: OUT/.logs cannot be made
    try:
        with step("reading", input="x.jpg"):
            raise ValueError("bad")
    except ValueError as e:
        exc = e
    assert step_of(exc) == ("reading", "x.jpg")
    log = write_crash_log("predict", exc, ["predict"], log_dirs(out=blocker / "sub" / "o.csv"))
    assert log is not None and log.parent == tmp_path / "cache" / "campusgps" / "logs"
    line = crash_line("predict", exc, log)
    assert line.startswith("campusgps predict: internal error while reading (x.jpg): ValueError: bad;")


def test_innermost_step_is_named():
    with pytest.raises(KeyError) as ei:
        with step("outer", input="a"):
            with step("inner", input="b"):
                raise KeyError("k")
    assert step_of(ei.value) == ("inner", "b")


def test_own_warnings_print_as_one_plain_line(monkeypatch):
    import warnings

    from campusgps.cli.main import _plain_warnings
    from campusgps.exif.times import CaptureTimeWarning

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    _plain_warnings("train")
    assert warnings.formatwarning(CaptureTimeWarning("x"), CaptureTimeWarning, "f.py", 1) == \
        "campusgps train: warning: x\n"
    assert "f.py:1" in warnings.formatwarning(UserWarning("y"), UserWarning, "f.py", 1)
