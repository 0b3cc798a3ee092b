"""`campusgps split`: location-grouped splits that never straddle a spot; `--apply-audit`."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from campusgps.cli.main import main
from campusgps.dataset import Dataset
from campusgps.ingest.split import assign_splits, location_groups


def spots_dataset(tmp_path, n_spots=40, views=5, seed=0):
    """40 spots on a 20 m grid (jittered), 5 photos within 2 m of each spot centre."""
    from conftest import make_toy_dataset

    ds = make_toy_dataset(tmp_path / "ds", n_spots=n_spots, views=views, size=(16, 12), seed=seed)
    rng = np.random.default_rng(seed)
    spot = ds.manifest["spot"].to_numpy()
    centres = np.c_[(np.arange(n_spots) % 8) * 20.0, (np.arange(n_spots) // 8) * 20.0] + rng.uniform(-3, 3, (n_spots, 2))
    en = centres[spot] + rng.uniform(-1, 1, (len(spot), 2))
    lat, lon = ds.frame.to_wgs84(en[:, 0], en[:, 1])
    ds.manifest["east_m"], ds.manifest["north_m"], ds.manifest["lat"], ds.manifest["lon"] = en[:, 0], en[:, 1], lat, lon
    ds.manifest["split"] = ""
    ds.save()
    return ds


def straddling_pairs(ds, radius):
    en, split = ds.en(), ds.manifest["split"].to_numpy()
    pairs = cKDTree(en).query_pairs(radius, output_type="ndarray")
    return int((split[pairs[:, 0]] != split[pairs[:, 1]]).sum())


def test_split_groups_never_straddle_and_hit_fractions(tmp_path, capsys):
    ds = spots_dataset(tmp_path)
    assert main(["split", str(ds.root), "--val", "0.2", "--test", "0.2", "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert "location groups" in out and "train" in out and "val" in out and "test" in out
    ds = Dataset.open(ds.root)
    assert straddling_pairs(ds, 5.0) == 0
    frac = ds.manifest["split"].value_counts(normalize=True)
    assert frac["train"] == pytest.approx(0.6, abs=0.08)
    assert frac["val"] == pytest.approx(0.2, abs=0.08) and frac["test"] == pytest.approx(0.2, abs=0.08)
    # one group per spot, and every photo of a spot shares its split
    assert ds.manifest.groupby("spot")["split"].nunique().max() == 1
    assert ds.manifest.groupby("spot")["split_group"].nunique().max() == 1


def test_split_is_deterministic_for_a_seed(tmp_path):
    ds = spots_dataset(tmp_path)
    runs = []
    for seed in (3, 3, 4):
        assert main(["split", str(ds.root), "--seed", str(seed)]) == 0
        runs.append(Dataset.open(ds.root).manifest["split"].tolist())
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_test_zero_for_a_separate_query_session(tmp_path):
    ds = spots_dataset(tmp_path)
    assert main(["split", str(ds.root), "--val", "0.25", "--test", "0"]) == 0
    counts = Dataset.open(ds.root).manifest["split"].value_counts()
    assert "test" not in counts and counts["val"] > 0 and counts["train"] > counts["val"]


def test_larger_radius_merges_spots(tmp_path):
    ds = spots_dataset(tmp_path)
    assert main(["split", str(ds.root), "--group-radius-m", "25"]) == 0
    ds = Dataset.open(ds.root)
    assert straddling_pairs(ds, 25.0) == 0


def test_groups_are_transitive_chains():
    east = np.array([0.0, 4.0, 8.0, 12.0, 100.0, 103.0, 500.0])
    g = location_groups(east, np.zeros_like(east), 5.0)
    assert len(set(g[:4])) == 1 and g[4] == g[5] and len(set(g)) == 3
    g0 = location_groups(np.array([0.0, 0.0, 1.0]), np.zeros(3), 0.0)
    assert g0[0] == g0[1] != g0[2]


def test_assign_splits_edge_cases():
    assert assign_splits(np.array([0, 0, 0]), 0.2, 0.2).tolist() == ["train"] * 3  # one group: all train
    s = assign_splits(np.arange(10), 0.1, 0.1, seed=1)
    assert (s == "val").sum() == 1 and (s == "test").sum() == 1


@pytest.mark.parametrize("argv,needle", [(["--val", "0.6", "--test", "0.5"], "nothing to train on"),
                                         (["--val", "-0.1"], "--val"), (["--group-radius-m", "-1"], "radius")])
def test_bad_fractions_exit_2(tmp_path, capsys, argv, needle):
    ds = spots_dataset(tmp_path, n_spots=8)
    assert main(["split", str(ds.root), *argv]) == 2
    assert needle in capsys.readouterr().err


def test_missing_dataset_exit_2(tmp_path, capsys):
    assert main(["split", str(tmp_path / "nope")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err


def write_audit(path, rows):
    cols = ["id", "file", "label_lat", "label_lon", "pred_lat", "pred_lon", "error_m", "radius_m", "decision",
            "new_lat", "new_lon", "note"]
    pd.DataFrame([{c: r.get(c, "") for c in cols} for r in rows], columns=cols).to_csv(path, index=False)


def test_apply_audit(tmp_path, capsys):
    ds = spots_dataset(tmp_path, n_spots=8)
    assert main(["split", str(ds.root), "--seed", "1"]) == 0
    ds = Dataset.open(ds.root)
    m = ds.manifest
    ids = m["id"].tolist()
    val_id = m.loc[m["split"] == "val", "id"].iloc[0]
    new_lat, new_lon = ds.frame.to_wgs84(7.0, -3.0)
    dropped_file = ds.root / m.loc[m["id"] == ids[2], "file"].iloc[0]
    audit = tmp_path / "audit.csv"
    write_audit(audit, [
        {"id": ids[0], "decision": "relabel", "new_lat": float(new_lat), "new_lon": float(new_lon)},
        {"id": ids[1], "decision": "keep"},
        {"id": ids[2], "decision": "drop", "note": "photo of my thumb"},
        {"id": val_id, "decision": "Move_To_Train"},
        {"id": ids[3], "decision": ""},
    ])
    before = m.set_index("id")
    assert main(["split", str(ds.root), "--apply-audit", str(audit)]) == 0
    assert "relabel 1" in capsys.readouterr().out
    after = Dataset.open(ds.root).manifest.set_index("id")
    assert len(after) == len(before) - 1 and ids[2] not in after.index
    r = after.loc[ids[0]]
    assert (r["lat"], r["lon"]) == pytest.approx((float(new_lat), float(new_lon)), abs=1e-9)
    assert (r["east_m"], r["north_m"]) == pytest.approx((7.0, -3.0), abs=1e-6)
    assert bool(r["corrected"]) and r["label_source"] == "correction"
    assert after.loc[val_id, "split"] == "train"
    for i in (ids[1], ids[3]):
        pd.testing.assert_series_equal(after.loc[i], before.loc[i])
    rej = pd.read_csv(ds.root / "rejected.csv")
    assert rej.to_dict("records") == [{"path": before.loc[ids[2], "source_path"], "reason": "dropped_by_audit"}]
    assert not dropped_file.exists()


def test_apply_audit_unknown_decision_changes_nothing(tmp_path, capsys):
    ds = spots_dataset(tmp_path, n_spots=4)
    ids = ds.manifest["id"].tolist()
    audit = tmp_path / "audit.csv"
    write_audit(audit, [{"id": ids[0], "decision": "drop"}, {"id": ids[1], "decision": "delete"}])
    before = (ds.root / "manifest.parquet").read_bytes()
    assert main(["split", str(ds.root), "--apply-audit", str(audit)]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "'delete'" in err and "relabel, keep, move_to_train, drop" in err
    assert (ds.root / "manifest.parquet").read_bytes() == before


def test_apply_audit_relabel_needs_coordinates_and_known_ids(tmp_path, capsys):
    ds = spots_dataset(tmp_path, n_spots=4)
    audit = tmp_path / "audit.csv"
    write_audit(audit, [{"id": ds.manifest["id"].iloc[0], "decision": "relabel"}])
    assert main(["split", str(ds.root), "--apply-audit", str(audit)]) == 2
    assert "new_lat/new_lon" in capsys.readouterr().err
    write_audit(audit, [{"id": "ffffffffffffffff", "decision": "keep"}])
    assert main(["split", str(ds.root), "--apply-audit", str(audit)]) == 2
    assert "not in" in capsys.readouterr().err


def test_dropped_photo_is_not_re_ingested(tmp_path):
    from PIL import Image

    from campusgps.exif.metadata import gps_exif_bytes

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 24), (40 * i, 0, 0)).save(src / f"p{i}.jpg",
                                                        exif=gps_exif_bytes(31.262 + 1e-4 * i, 34.801))
    out = tmp_path / "ds"
    assert main(["ingest", str(src), "--out", str(out), "--workers", "1"]) == 0
    ds = Dataset.open(out)
    audit = tmp_path / "audit.csv"
    write_audit(audit, [{"id": ds.manifest["id"].iloc[0], "decision": "drop"}])
    assert main(["split", str(out), "--apply-audit", str(audit)]) == 0
    assert main(["ingest", str(src), "--out", str(out), "--workers", "1"]) == 0
    assert len(Dataset.open(out)) == 2
    assert list(pd.read_csv(out / "rejected.csv")["reason"]) == ["dropped_by_audit"]
