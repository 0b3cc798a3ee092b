"""Capture times from real phones: offsets, naive local times, sub-seconds and junk on one clock."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from campusgps.exif.times import (CaptureTimeWarning, capture_times_s, exif_time_iso, gps_time_iso, parse_offset)

# issue 10: iPhone (offset) and Samsung (naive, sub-seconds) photos of one walk
IPHONE = "2024-09-23T16:06:58-04:00"
SAMSUNG = "2024-09-23T16:08:10.302000"
UTC_1606 = 1727122018.0  # 2024-09-23 20:06:58 UTC


def test_mixed_offsets_and_naive_times_share_one_clock():
    vals = [IPHONE, SAMSUNG, "2024-09-23T16:07:00-04:00", "2024:09:23 16:09:00", "2024-09-23T20:10:00Z",
            "", None, float("nan"), "not a time", "0000:00:00 00:00:00", "<NA>"]
    with pytest.warns(CaptureTimeWarning, match="missing for 4 and unreadable for 2 of 11"):
        t, bad = capture_times_s(vals)
    assert bad == 6 and np.isnan(t[5:]).all()
    assert t[0] == UTC_1606
    # naive times are read in the collection's most common offset (-04:00), the same for all of them
    assert t[1] - t[0] == pytest.approx(72.302, abs=1e-6)
    assert t[3] - t[0] == 122.0
    assert t[4] - t[0] == 182.0  # Z is UTC


def test_naive_only_collection_keeps_its_spacing_and_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t, bad = capture_times_s(["2024-04-16T15:53:01", "2024-04-16T15:53:07.25"])
    assert bad == 0 and t[1] - t[0] == pytest.approx(6.25)


def test_most_common_offset_wins():
    t, _ = capture_times_s(["2024-01-01T12:00:00+02:00", "2024-01-01T12:00:00+02:00",
                            "2024-01-01T12:00:00-05:00", "2024-01-01T12:00:00"], warn=False)
    assert t[3] == t[0] and t[2] - t[0] == 7 * 3600


def test_exif_tag_pairing_and_gps_dates():
    assert exif_time_iso("2024:09:23 16:06:58", "302", "-04:00") == "2024-09-23T16:06:58.302000-04:00"
    assert exif_time_iso("2024:09:23 16:06:58", "41", None) == "2024-09-23T16:06:58.410000"
    assert exif_time_iso("2024:09:23 16:06:58", None, "+0530") == "2024-09-23T16:06:58+05:30"
    assert exif_time_iso("0000:00:00 00:00:00") is None and exif_time_iso("    :  :     :  :  ") is None
    assert exif_time_iso("1970:01:01 00:00:00") is None  # clock never set
    assert gps_time_iso("2024:09:23", (20.0, 6.0, 58.5)) == "2024-09-23T20:06:58.500000+00:00"
    assert gps_time_iso("2024-09-23", (20, 6, 58)) == "2024-09-23T20:06:58+00:00"  # dashed date
    assert gps_time_iso("2024-09-23", (25, 0, 0)) is None and gps_time_iso("", (1, 2, 3)) is None
    assert parse_offset("Z") == 0 and parse_offset("-04:00") == -240 and parse_offset("+99:00") is None


def test_exif_offset_time_original_is_read(tmp_path):
    """A phone file with DateTimeOriginal + SubSecTimeOriginal + OffsetTimeOriginal, and DateTimeDigitized
    with its own (different) offset: each time tag keeps its own partner tags."""
    import piexif
    from PIL import Image

    from campusgps.exif import read_metadata
    from campusgps.exif.metadata import gps_exif_dict

    d = gps_exif_dict(31.0, 34.0)
    d["Exif"].update({piexif.ExifIFD.DateTimeDigitized: b"2024:09:23 16:06:58",
                      piexif.ExifIFD.OffsetTimeDigitized: b"+03:00", piexif.ExifIFD.OffsetTime: b"+01:00"})
    p = tmp_path / "dig.jpg"
    Image.new("RGB", (32, 32)).save(p, exif=piexif.dump(d))
    assert read_metadata(p).taken_at == "2024-09-23T16:06:58+03:00"
    d["Exif"].update({piexif.ExifIFD.DateTimeOriginal: b"2024:09:23 16:06:57",
                      piexif.ExifIFD.SubSecTimeOriginal: b"5", piexif.ExifIFD.OffsetTimeOriginal: b"-04:00"})
    Image.new("RGB", (32, 32)).save(p, exif=piexif.dump(d))
    assert read_metadata(p).taken_at == "2024-09-23T16:06:57.500000-04:00"
    d["GPS"].update({piexif.GPSIFD.GPSDateStamp: b"2024-09-23", piexif.GPSIFD.GPSTimeStamp: ((20, 1), (6, 1), (0, 0))})
    d["Exif"] = {}
    Image.new("RGB", (32, 32)).save(p, exif=piexif.dump(d))
    assert read_metadata(p).taken_at is None  # 0/0 seconds: unknown, not midnight-ish garbage


def test_retrieval_training_with_iphone_and_samsung_times(tmp_path):
    """Issue 10's crash: retrieval's spot grouping parsed the manifest's times with pandas, which raised
    'Mixed timezones detected' as soon as one phone wrote an offset and another did not."""
    from campusgps.localizers.retrieval import RetrievalLocalizer
    from conftest import make_toy_dataset

    ds = make_toy_dataset(tmp_path / "toy", n_spots=8, views=3)
    n = len(ds.manifest)
    stamps = [IPHONE if i % 3 == 0 else SAMSUNG if i % 3 == 1 else "" for i in range(n)]
    stamps[2] = "garbage"
    ds.manifest["taken_at"] = stamps
    ds.save()
    with pytest.warns(CaptureTimeWarning):
        loc = RetrievalLocalizer(backbone="tiny-cnn", finetune="off").fit(ds)
    t = np.asarray(loc.ref_time, dtype=float)
    assert np.isfinite(t).any() and np.nanmin(t) == UTC_1606
    assert set(np.round(t[np.isfinite(t)] - UTC_1606, 3)) <= {0.0, 72.302}
    p = loc.predict(ds.subset("test").paths())
    assert np.isfinite(p.lat).all()


def test_collection_without_any_time_is_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t, bad = capture_times_s(["", "", None])
    assert bad == 3 and np.isnan(t).all()
