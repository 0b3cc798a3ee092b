"""`campusgps ingest` on a folder of real (tiny) files: phone EXIF, every kind of bad file, labels, resume."""
from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import piexif
import pytest
from PIL import Image

from campusgps.cli.main import main
from campusgps.dataset import Dataset
from campusgps.exif.metadata import gps_exif_bytes

BASE = (31.2620, 34.8010)


def photo(seed: int, w=80, h=60) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 255, (h // 4, w // 4, 3), np.uint8)
    return np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.BILINEAR))


def save(path: Path, arr, fmt="JPEG", exif=None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if exif is not None:
        kw["exif"] = exif
    Image.fromarray(arr).save(path, fmt, **kw)
    return path


def at(i: int) -> tuple[float, float]:
    """Spots ~30 m apart."""
    return BASE[0] + 0.00027 * (i % 5), BASE[1] + 0.00032 * (i // 5)


def bomb_png(path: Path, w=60000, h=60000) -> Path:
    """A 3.6 gigapixel PNG header with almost no data: opening it must not allocate anything."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture
def messy(tmp_path) -> tuple[Path, dict]:
    """A folder like a real phone dump. Returns (src, expected reason-or-'ok' per relative path)."""
    src = tmp_path / "src"
    exp = {}
    # Samsung: DMS rationals, N/E, DOP
    lat, lon = at(0)
    d = piexif.load(gps_exif_bytes(lat, lon, alt=281.5, make="samsung", model="SM-G991B", focal_35mm=26,
                                   taken_at="2023-10-05T14:22:31"))
    d["GPS"][piexif.GPSIFD.GPSDOP] = (18, 10)
    save(src / "DCIM/Camera/20231005_142231.jpg", photo(0), exif=piexif.dump(d))
    exp["DCIM/Camera/20231005_142231.jpg"] = "ok"
    # Apple: S/W-style refs handled in test_exif; here rotated (orientation 6) with HPE
    save(src / "DCIM/100APPLE/IMG_0001.JPG", photo(1, 80, 60),
         exif=gps_exif_bytes(*at(1), accuracy_m=4.7, make="Apple", model="iPhone 13", orientation=6))
    exp["DCIM/100APPLE/IMG_0001.JPG"] = "ok"
    save(src / "heic/IMG_0002.HEIC", photo(2), fmt="HEIF", exif=gps_exif_bytes(*at(2)))
    exp["heic/IMG_0002.HEIC"] = "ok"
    save(src / "scan.tif", photo(3), fmt="TIFF", exif=gps_exif_bytes(*at(3)))
    exp["scan.tif"] = "ok"
    save(src / "screenshot.png", photo(4), fmt="PNG")
    exp["screenshot.png"] = "no_gps"
    full = save(src / "full.jpg", photo(5, 320, 240), exif=gps_exif_bytes(*at(4)))
    (src / "truncated.jpg").write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    exp["full.jpg"] = "ok"
    exp["truncated.jpg"] = "truncated"
    (src / "random.jpg").write_bytes(np.random.default_rng(0).bytes(3000))
    exp["random.jpg"] = "not_an_image"
    (src / "notes.txt").write_text("meeting at the library\n")
    exp["notes.txt"] = "not_an_image"
    bomb_png(src / "bomb.png")
    exp["bomb.png"] = "decompression_bomb"
    shutil.copy(src / "scan.tif", src / "copy_of_scan.tif")
    exp["copy_of_scan.tif"] = "duplicate"
    save(src / "null_island.jpg", photo(6), exif=gps_exif_bytes(0.0, 0.0))
    exp["null_island.jpg"] = "zero_or_out_of_range"
    (src / "empty.jpg").write_bytes(b"")
    exp["empty.jpg"] = "not_an_image"
    return src, exp


def read_rejected(out: Path) -> dict[str, str]:
    df = pd.read_csv(out / "rejected.csv", dtype=str)
    assert list(df.columns) == ["path", "reason"]
    return dict(zip(df["path"], df["reason"]))


def outcome(src: Path, out: Path) -> dict[str, str]:
    ds = Dataset.open(out)
    res = {os.path.relpath(p, src): "ok" for p in ds.manifest["source_path"]}
    for p, r in read_rejected(out).items():
        assert os.path.relpath(p, src) not in res, f"{p} is both a sample and rejected"
        res[os.path.relpath(p, src)] = r
    return res


def test_messy_folder_every_file_accounted_for(messy, tmp_path, capsys):
    src, exp = messy
    out = tmp_path / "ds"
    assert main(["ingest", str(src), "--out", str(out), "--workers", "1", "--max-side", "64"]) == 0
    printed = capsys.readouterr().out
    assert "accepted 5 new photo(s)" in printed and "decompression_bomb 1" in printed
    # duplicates are decided in path order: copy_of_scan.tif sorts before scan.tif
    exp["copy_of_scan.tif"], exp["scan.tif"] = "ok", "duplicate"
    assert outcome(src, out) == exp

    ds = Dataset.open(out)
    m = ds.manifest.set_index(ds.manifest["source_path"].map(lambda p: os.path.relpath(p, src)))
    for rel, i in [("DCIM/Camera/20231005_142231.jpg", 0), ("DCIM/100APPLE/IMG_0001.JPG", 1),
                   ("heic/IMG_0002.HEIC", 2), ("copy_of_scan.tif", 3), ("full.jpg", 4)]:
        lat, lon = at(i)
        assert abs(m.at[rel, "lat"] - lat) < 1e-6 and abs(m.at[rel, "lon"] - lon) < 1e-6, rel
        assert (out / m.at[rel, "file"]).exists()
        assert m.at[rel, "label_source"] == "exif" and m.at[rel, "split"] == ""
    s = m.loc["DCIM/Camera/20231005_142231.jpg"]
    assert s["camera"] == "samsung SM-G991B" and s["focal_35mm"] == 26 and s["alt"] == pytest.approx(281.5)
    assert s["accuracy_m"] == pytest.approx(9.0) and s["taken_at"] == "2023-10-05T14:22:31"
    # stored once, resized, orientation applied: the 80x60 rotated photo is stored 48x64
    a = m.loc["DCIM/100APPLE/IMG_0001.JPG"]
    assert (a["width"], a["height"]) == (48, 64)
    with Image.open(out / a["file"]) as im:
        assert im.size == (48, 64) and im.format == "JPEG"
    assert m.loc["full.jpg", "width"] == 64 and m.loc["full.jpg", "height"] == 48
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{i}.jpg" for i in m["id"])
    # frame.json origin comes from the data; east/north agree with it
    assert abs(ds.frame.lat0 - BASE[0]) < 0.001 and abs(ds.frame.lon0 - BASE[1]) < 0.001
    e, n = ds.frame.to_local(m["lat"], m["lon"])
    assert np.allclose(e, m["east_m"]) and np.allclose(n, m["north_m"])


def test_parallel_workers_same_result(messy, tmp_path):
    src, _ = messy
    assert main(["ingest", str(src), "--out", str(tmp_path / "a"), "--workers", "1", "--max-side", "64"]) == 0
    assert main(["ingest", str(src), "--out", str(tmp_path / "b"), "--workers", "2", "--max-side", "64"]) == 0
    a, b = Dataset.open(tmp_path / "a").manifest, Dataset.open(tmp_path / "b").manifest
    cols = ["id", "source_path", "lat", "lon", "width", "height"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert read_rejected(tmp_path / "a") == read_rejected(tmp_path / "b")


def test_small_pixel_limit_rejects_as_bomb(tmp_path):
    src = tmp_path / "src"
    save(src / "big.jpg", photo(0, 200, 150), exif=gps_exif_bytes(*at(0)))
    save(src / "small.jpg", photo(1, 40, 30), exif=gps_exif_bytes(*at(1)))
    out = tmp_path / "ds"
    assert main(["ingest", str(src), "--out", str(out), "--workers", "1", "--max-pixels", "10000"]) == 0
    assert outcome(src, out) == {"big.jpg": "decompression_bomb", "small.jpg": "ok"}


def test_filters_bbox_accuracy_near_dup_isolated(tmp_path):
    src = tmp_path / "src"
    save(src / "a.jpg", photo(0), exif=gps_exif_bytes(*at(0), accuracy_m=5))
    save(src / "b.jpg", photo(1), exif=gps_exif_bytes(at(0)[0] + 0.00002, at(0)[1], accuracy_m=5))
    save(src / "c_requality.jpg", photo(0), exif=gps_exif_bytes(*at(0)), quality=60)  # same scene as a.jpg
    save(src / "d_blurry_fix.jpg", photo(2), exif=gps_exif_bytes(*at(1), accuracy_m=65))
    save(src / "e_far.jpg", photo(3), exif=gps_exif_bytes(BASE[0] + 0.01, BASE[1], accuracy_m=3))
    save(src / "f_lonely.jpg", photo(4), exif=gps_exif_bytes(BASE[0] - 0.003, BASE[1], accuracy_m=3))
    out = tmp_path / "ds"
    rc = main(["ingest", str(src), "--out", str(out), "--workers", "1", "--bbox",
               f"{BASE[0] - 0.005},{BASE[1] - 0.005},{BASE[0] + 0.005},{BASE[1] + 0.005}",
               "--max-accuracy-m", "20", "--near-dup", "--isolated-m", "50"])
    assert rc == 0
    assert outcome(src, out) == {"a.jpg": "ok", "b.jpg": "ok", "c_requality.jpg": "near_duplicate",
                                 "d_blurry_fix.jpg": "low_accuracy", "e_far.jpg": "outside_bbox",
                                 "f_lonely.jpg": "isolated"}
    assert len(list((out / "images").iterdir())) == 2  # late rejections leave no stored image behind


def test_labels_win_over_exif_and_extras_are_kept(tmp_path):
    src = tmp_path / "src"
    save(src / "photos/000001.jpg", photo(0), exif=gps_exif_bytes(*at(0)))
    save(src / "photos/000002.jpg", photo(1))                             # no EXIF: label only
    save(src / "photos/000003.jpg", photo(2), exif=gps_exif_bytes(*at(2)))  # not in the CSV: EXIF
    labels = tmp_path / "truth.csv"
    labels.write_text("Image_Name,Latitude,LNG,condition,session\n"
                      f"photos/000001.jpg,{at(3)[0]},{at(3)[1]},day,1\n"
                      f"000002.jpg,{at(4)[0]},{at(4)[1]},night,2\n"
                      f"missing.jpg,{at(4)[0]},{at(4)[1]},day,1\n")
    out = tmp_path / "ds"
    assert main(["ingest", str(src), "--out", str(out), "--labels", str(labels), "--workers", "1"]) == 0
    m = Dataset.open(out).manifest.set_index("source_path")
    r1, r2, r3 = (str(src / f"photos/00000{i}.jpg") for i in (1, 2, 3))
    assert (m.at[r1, "lat"], m.at[r1, "lon"]) == pytest.approx(at(3), abs=1e-9)
    assert m.at[r1, "label_source"] == "labels" and m.at[r1, "condition"] == "day" and m.at[r1, "session"] == 1
    assert (m.at[r2, "lat"], m.at[r2, "lon"]) == pytest.approx(at(4), abs=1e-9) and m.at[r2, "condition"] == "night"
    assert (m.at[r3, "lat"], m.at[r3, "lon"]) == pytest.approx(at(2), abs=1e-9) and m.at[r3, "label_source"] == "exif"


@pytest.mark.parametrize("header,missing", [("name,lat,lon", "file-name column"),
                                            ("file,y,lon", "latitude column"),
                                            ("file,lat,x", "longitude column")])
def test_labels_with_wrong_columns_exit_2_naming_expected(tmp_path, capsys, header, missing):
    src = tmp_path / "src"
    save(src / "a.jpg", photo(0), exif=gps_exif_bytes(*at(0)))
    labels = tmp_path / "labels.csv"
    labels.write_text(header + "\na.jpg,31.26,34.80\n")
    rc = main(["ingest", str(src), "--out", str(tmp_path / "ds"), "--labels", str(labels)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert missing in err and str(labels) in err
    assert "file or filename or image or image_file or image_name" in err or "lat or latitude" in err \
        or "lon or lng or longitude" in err


def test_labels_with_bad_number_names_the_line(tmp_path, capsys):
    src = tmp_path / "src"
    save(src / "a.jpg", photo(0))
    labels = tmp_path / "labels.csv"
    labels.write_text("file,lat,lon\na.jpg,31.26,34.80\nb.jpg,north,34.8\n")
    assert main(["ingest", str(src), "--out", str(tmp_path / "ds"), "--labels", str(labels)]) == 2
    assert "line 3" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [(["--bbox", "1,2,3"], "--bbox"), (["--workers", "0"], "--workers")])
def test_bad_options_exit_2(tmp_path, capsys, argv, needle):
    (tmp_path / "src").mkdir()
    assert main(["ingest", str(tmp_path / "src"), "--out", str(tmp_path / "ds"), *argv]) == 2
    assert needle in capsys.readouterr().err


def test_missing_src_exit_2(tmp_path, capsys):
    assert main(["ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "SRC folder not found" in err and "nope" in err


def test_corrections_override_and_are_recorded(tmp_path):
    src = tmp_path / "src"
    save(src / "a.jpg", photo(0), exif=gps_exif_bytes(*at(0)))
    save(src / "b.jpg", photo(1), exif=gps_exif_bytes(*at(1)))
    out = tmp_path / "ds"
    fix = tmp_path / "fix.csv"
    fix.write_text(f"file,lat,lon\nb.jpg,{at(2)[0]},{at(2)[1]}\n")
    assert main(["ingest", str(src), "--out", str(out), "--workers", "1", "--corrections", str(fix)]) == 0
    m = Dataset.open(out).manifest.set_index("source_path")
    b = m.loc[str(src / "b.jpg")]
    assert (b["lat"], b["lon"]) == pytest.approx(at(2), abs=1e-9)
    assert bool(b["corrected"]) and b["label_source"] == "correction"
    assert not bool(m.loc[str(src / "a.jpg"), "corrected"])
    # a later corrections file also fixes samples ingested earlier, east/north follow
    fix.write_text(f"file,lat,lon\na.jpg,{at(3)[0]},{at(3)[1]}\n")
    assert main(["ingest", str(src), "--out", str(out), "--workers", "1", "--corrections", str(fix)]) == 0
    ds = Dataset.open(out)
    a = ds.manifest.set_index("source_path").loc[str(src / "a.jpg")]
    assert (a["lat"], a["lon"]) == pytest.approx(at(3), abs=1e-9) and bool(a["corrected"])
    e, n = ds.frame.to_local(a["lat"], a["lon"])
    assert (a["east_m"], a["north_m"]) == pytest.approx((float(e), float(n)))


def test_rerun_adds_only_new_files_and_keeps_frame(tmp_path, capsys):
    src = tmp_path / "src"
    for i in range(3):
        save(src / f"p{i}.jpg", photo(i), exif=gps_exif_bytes(*at(i)))
    out = tmp_path / "ds"
    assert main(["ingest", str(src), "--out", str(out), "--workers", "1"]) == 0
    frame1 = (out / "frame.json").read_text()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    save(src / "p3.jpg", photo(3), exif=gps_exif_bytes(at(9)[0] + 0.01, at(9)[1]))  # moves the median
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    capsys.readouterr()
    assert main(["ingest", str(src), "--out", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "accepted 1 new photo(s); dataset now has 4 sample(s); 3 already ingested" in printed
    assert (out / "frame.json").read_text() == frame1
    assert {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir() if p.name in stamps} == stamps
    assert outcome(src, out)["broken.jpg"] in ("not_an_image", "unreadable", "truncated")
    assert len(Dataset.open(out)) == 4


def test_error_mid_run_keeps_what_was_done(tmp_path, monkeypatch):
    """Nothing already ingested is lost when something fails later; the re-run finishes."""
    from campusgps.ingest import pipeline

    src = tmp_path / "src"
    for i in range(5):
        save(src / f"p{i}.jpg", photo(i), exif=gps_exif_bytes(*at(i)))
    out = tmp_path / "ds"
    real = pipeline.process_file

    def flaky(job):
        if job.path.endswith("p3.jpg"):
            raise RuntimeError("disk on fire")
        return real(job)

    monkeypatch.setattr(pipeline, "process_file", flaky)
    with pytest.raises(RuntimeError):
        pipeline.ingest(src, out, config=pipeline.IngestConfig(workers=1), progress=False)
    assert len(Dataset.open(out)) == 3
    monkeypatch.setattr(pipeline, "process_file", real)
    res = pipeline.ingest(src, out, config=pipeline.IngestConfig(workers=1), progress=False)
    assert (res.added, res.skipped_existing, res.total) == (2, 3, 5)


KILLER = """
import os, signal, sys
from campusgps.ingest import pipeline
real, n = pipeline.process_file, [0]
def killing(job):
    r = real(job)
    n[0] += 1
    if n[0] == 5:   # the 5th image is stored but never recorded, then the process dies hard
        os.kill(os.getpid(), signal.SIGKILL)
    return r
pipeline.process_file = killing
pipeline.ingest(sys.argv[1], sys.argv[2], config=pipeline.IngestConfig(workers=1, checkpoint_every=2),
                progress=False)
"""


def test_killed_run_resumes_and_matches_clean_run(tmp_path):
    src = tmp_path / "src"
    for i in range(8):
        save(src / f"p{i}.jpg", photo(i), exif=gps_exif_bytes(*at(i)))
    (src / "zz_bad.jpg").write_bytes(b"nope")
    out = tmp_path / "ds"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(src), str(out)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert len(Dataset.open(out)) == 4 and len(list((out / "images").glob("*.jpg"))) == 5
    assert main(["ingest", str(src), "--out", str(out), "--workers", "2"]) == 0
    clean = tmp_path / "clean"
    assert main(["ingest", str(src), "--out", str(clean), "--workers", "1"]) == 0
    a, b = Dataset.open(out).manifest, Dataset.open(clean).manifest
    assert sorted(a["id"]) == sorted(b["id"]) and len(a) == 8
    assert read_rejected(out) == {str(src / "zz_bad.jpg"): "not_an_image"}
    assert not [p for p in (out / "images").iterdir() if p.suffix != ".jpg"]  # no temp files left
