"""campusgps demo --preset tiny, end to end: table printed, files written, re-run reuses the work."""
import json

import pandas as pd
import pytest

from campusgps.cli.main import main


@pytest.mark.slow
def test_demo_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("regression", "retrieval", "hybrid", "mean-position baseline", "median vs truth", "compare.html"):
        assert name in printed
    for m in ("regression", "retrieval", "hybrid"):
        assert (out / "models" / f"{m}.cgps").is_file()
        metrics = json.loads((out / "eval" / m / "metrics.json").read_text())
        assert metrics["vs_truth"]["n"] > 0 and "by_condition" in metrics
        assert (out / "eval" / m / "report.html").is_file() and (out / "eval" / m / "predictions.csv").is_file()
    df = pd.read_csv(out / "compare" / "compare.csv")
    assert set(df["model"]) == {"regression", "retrieval", "hybrid", "mean-position baseline"}
    assert (out / "compare" / "compare.html").is_file()
    # a second run reuses everything and prints the same table
    assert main(["demo", "--preset", "tiny", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "reusing" in err and "rendering" not in err
    assert main(["demo", "--preset", "small", "--out", str(out)]) == 2  # another preset in the same folder
