"""Real camera and phone files (../shared/data/exif-corpus): ingest all of them, read GPS and times right.

Expected GPS values below were worked out by hand from the raw GPS IFD rationals (as ``exiftool -n`` does:
degrees + minutes/60 + seconds/3600, negative for S/W), not copied from our own output.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from realdata import CORPUS, needs_corpus

pytestmark = needs_corpus

# file -> (lat, lon) from its GPSLatitude/GPSLongitude rationals and refs
HAND_GPS = {
    # Nikon P6000: seconds as 281400000/100000000
    "exif-samples/jpg/gps/DSCN0010.jpg": (43 + 28 / 60 + 2.814 / 3600, 11 + 53 / 60 + 6.45599999 / 3600),
    "exif-samples/jpg/gps/DSCN0042.jpg": (43 + 27 / 60 + 52.038 / 3600, 11 + 52 / 60 + 53.322 / 3600),
    # Kodak: decimal minutes, seconds 0/1, south of the equator (S ref, 0 degrees)
    "exif-samples/jpg/Kodak_CX7530.jpg": (-(22.278 / 60), 36 + 3.385 / 60),
    # iPhone 11 Pro Max HEIC, west longitude
    "exif-samples/heic/IMG_5195.HEIC": (39 + 3 / 60 + 4.84 / 3600, -(94 + 17 / 60 + 19.58 / 3600)),
    # Nokia HEIF
    "exif-samples/heic/mobile/HMD_Nokia_8.3_5G_hdr.heif": (40 + 39 / 60 + 46.7766 / 3600,
                                                            -(3 + 45 / 60 + 49.465836 / 3600)),
    "exif-samples/jpg/hdr/iphone_hdr_NO.jpg": (40 + 26 / 60 + 49.10 / 3600, -(3 + 43 / 60 + 29.11 / 3600)),
    # DJI/FLIR 16-bit thermal TIFF
    "exifr/001.tif": (50 + 51 / 60 + 45.3561 / 3600, 4 + 40 / 60 + 21.1517 / 3600),
    "exifr/heic-iphone7.heic": (38 + 2 / 60 + 47.91 / 3600, 12 + 59 / 60 + 39.88 / 3600),
    # GPS in a PNG eXIf chunk (seconds 653/50)
    "exifr/png/png_with_exif_and_gps.png": (50 + 17 / 60 + 58.57 / 3600, 14 + 49 / 60 + 13.06 / 3600),
    "exifr/issue-exifr-59.jpg": (37 + 44.8059 / 60, -(119 + 31.793 / 60)),
    # FLIR TIFF with odd denominators: 7311/625 and 496298/10369 seconds
    "exifr/issue-exif-js-124.tiff": (23 + 55 / 60 + (7311 / 625) / 3600, 71 + 12 / 60 + (496298 / 10369) / 3600),
}


@pytest.mark.parametrize("rel", sorted(HAND_GPS))
def test_gps_matches_hand_reading(rel):
    from campusgps.exif import read_metadata

    m = read_metadata(CORPUS / rel)
    lat, lon = HAND_GPS[rel]
    assert m.lat == pytest.approx(lat, abs=1e-6) and m.lon == pytest.approx(lon, abs=1e-6)


def test_capture_times_from_real_files():
    from campusgps.exif import read_metadata

    t = {rel: read_metadata(CORPUS / rel).taken_at for rel in (
        "exif-samples/heic/IMG_5195.HEIC", "exifr/heic-iphone7.heic", "exifr/issue-exifr-59.jpg",
        "exif-samples/jpg/invalid/image01551.jpg", "exifr/issue-exifr-4.jpg", "exifr/issue-exifr-13.jpg")}
    # iPhone: DateTimeOriginal + its SubSecTimeOriginal (054) + OffsetTimeOriginal
    assert t["exif-samples/heic/IMG_5195.HEIC"] == "2021-04-11T15:47:53.054000-05:00"
    assert t["exifr/heic-iphone7.heic"] == "2019-10-20T18:34:30.130000+02:00"
    assert t["exifr/issue-exifr-59.jpg"] == "2015-06-12T13:40:32.410000"  # SubSec "41" = 0.41 s
    # no EXIF time at all: XMP xmp:CreateDate (Z and naive spellings)
    assert t["exif-samples/jpg/invalid/image01551.jpg"] == "2011-09-23T12:43:03+00:00"
    assert t["exifr/issue-exifr-4.jpg"] == "2019-03-22T12:33:04"
    assert t["exifr/issue-exifr-13.jpg"] == "2019-10-03T09:10:11"  # EXIF wins over XMP's 1970-01-01


def test_gps_only_in_xmp(tmp_path):
    """A real XMP packet (IPTC sample, ``exif:GPSLatitude="38,53.4142N"``) is the only GPS of the file."""
    from campusgps.exif import read_metadata

    src = Image.open(CORPUS / "exifr/iptc-agency-photographer-example.jpg")
    xmp = src.info["xmp"]
    assert b'GPSLatitude="38,53.4142N"' in xmp
    buf = io.BytesIO()
    src.convert("RGB").save(buf, "JPEG", xmp=xmp)  # pixels + XMP, no EXIF
    assert "exif" not in Image.open(io.BytesIO(buf.getvalue())).info
    m = read_metadata(buf.getvalue())
    assert m.lat == pytest.approx(38 + 53.4142 / 60, abs=1e-6)
    assert m.lon == pytest.approx(-(77 + 2.9578 / 60), abs=1e-6)
    # exif:DateTimeOriginal="2009-06-24T09:41:07.72+01:00" is preferred to xmp:CreateDate (a later edit)
    assert m.taken_at == "2009-06-24T09:41:07.720000+01:00"


def test_xmp_coordinate_spellings():
    from campusgps.exif.xmp import read_xmp, xmp_coordinate

    assert xmp_coordinate("0,4.21601S", "lat") == pytest.approx(-4.21601 / 60, abs=1e-12)
    assert xmp_coordinate("38,53,24.85N", "lat") == pytest.approx(38 + 53 / 60 + 24.85 / 3600)
    assert xmp_coordinate("77,2.9578W", "lon") == pytest.approx(-(77 + 2.9578 / 60))
    assert xmp_coordinate("-77.5", "lon") == -77.5
    assert xmp_coordinate("12,3.5E", "lat") is None and xmp_coordinate("95,0N", "lat") is None
    assert xmp_coordinate("junk", "lat") is None
    packet = ('<x:xmpmeta><rdf:RDF><rdf:Description exif:GPSLatitude="0,4.21601S" '
              'exif:GPSLongitude="79,12.5W"><exif:DateTimeOriginal>2024-09-23T16:06:58.5-04:00'
              '</exif:DateTimeOriginal></rdf:Description></rdf:RDF></x:xmpmeta>')
    got = read_xmp(packet)
    assert got["lat"] == pytest.approx(-0.0702668333, abs=1e-9) and got["lon"] == pytest.approx(-79.2083333, abs=1e-6)
    assert got["taken_at"] == "2024-09-23T16:06:58.500000-04:00"


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of the grey levels (the _1 files were re-encoded with other colours); -1 if sizes differ."""
    if a.shape != b.shape:
        return -1.0
    return float(np.corrcoef(a.mean(axis=2).ravel(), b.mean(axis=2).ravel())[0, 1])


@pytest.mark.parametrize("kind", ["exif-samples/jpg/orientation/landscape_{}.jpg",
                                  "exif-samples/jpg/orientation/portrait_{}.jpg", "exifr/orientation/f{}t.jpg"])
def test_orientation_is_applied(kind):
    """Orientation 1..8 files of one scene all load as the same upright picture."""
    from campusgps.exif import load_image, read_metadata

    ref = load_image(CORPUS / kind.format(1))
    for o in range(2, 9):
        p = CORPUS / kind.format(o)
        assert read_metadata(p).orientation == o
        raw = np.asarray(Image.open(p).convert("RGB"))
        got = load_image(p)
        assert _corr(got, ref) > 0.95, (p.name, _corr(got, ref))
        assert _corr(raw, ref) < 0.6  # the file really stores it turned or mirrored


def test_thermal_16bit_tiff_loads_with_contrast():
    """DJI/FLIR radiometric TIFF (I;16): shrinking crashed ('image has wrong mode'), and max-scaling made
    it a flat grey (std ~1)."""
    from campusgps.exif import load_image

    for rel in ("exifr/001.tif", "exifr/002.tiff", "exifr/issue-exif-js-124.tiff"):
        a = load_image(CORPUS / rel, max_side=64)
        assert a.shape[2] == 3 and max(a.shape[:2]) == 64
        assert a.std() > 20, (rel, a.std())


def test_ingest_whole_corpus(tmp_path):
    """Every file is either accepted or rejected with a known reason; nothing crashes."""
    from campusgps.dataset import Dataset
    from campusgps.ingest.pipeline import REASONS, IngestConfig, ingest

    files = [p for p in CORPUS.rglob("*") if p.is_file()]
    assert len(files) >= 150
    res = ingest(CORPUS, tmp_path / "ds", config=IngestConfig(workers=1, max_side=256), progress=False)
    ds = Dataset.open(tmp_path / "ds")
    rej = pd.read_csv(tmp_path / "ds" / "rejected.csv")
    assert len(ds) + len(rej) == len(files) and set(rej["reason"]) <= set(REASONS)
    by = rej["reason"].value_counts().to_dict()
    assert len(ds) == res.added == 28 and by == {"no_gps": 121, "duplicate": 2, "not_an_image": 1}, (len(ds), by)
    m = ds.manifest.set_index(ds.manifest["source_path"].str.replace(str(CORPUS) + "/", "", regex=False))
    for rel, (lat, lon) in HAND_GPS.items():
        assert m.at[rel, "lat"] == pytest.approx(lat, abs=1e-6) and m.at[rel, "lon"] == pytest.approx(lon, abs=1e-6)
    # the times of one collection mix offsets, naive local times and sub-seconds: all usable together
    from campusgps.exif.times import capture_times_s

    t, bad = capture_times_s(ds.manifest["taken_at"], warn=False)
    assert bad == int((ds.manifest["taken_at"] == "").sum()) and np.isfinite(t).sum() == len(ds) - bad
    thermal = np.asarray(Image.open(tmp_path / "ds" / m.at["exifr/001.tif", "file"]))
    assert thermal.std() > 20  # not a grey card


def test_predict_folder_finds_avif_and_mpo(tmp_path):
    from campusgps.localizers.base import iter_image_files

    for name in ("a.avif", "b.MPO", "c.heic", "d.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in iter_image_files([tmp_path])] == ["a.avif", "b.MPO", "c.heic"]
    assert iter_image_files([CORPUS / "exifr" / "avif"])  # the real AVIF samples are found


def test_mpo_decodes_with_orientation_and_draft():
    """A multi-picture JPEG (MPO, as 3D and some Fujifilm/phone cameras write) with orientation 6."""
    from campusgps.exif import read_metadata
    from campusgps.exif.image import open_image
    from campusgps.exif.metadata import gps_exif_bytes

    base = Image.open(CORPUS / "exif-samples/jpg/gps/DSCN0010.jpg").convert("RGB")
    buf = io.BytesIO()
    base.save(buf, "MPO", save_all=True, append_images=[base.rotate(3)], exif=gps_exif_bytes(1.5, 2.5, orientation=6))
    data = buf.getvalue()
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert read_metadata(data).lat == pytest.approx(1.5)
    im = open_image(data, draft_max_side=100)
    assert im.size[1] > im.size[0] and max(im.size) < 640  # turned upright, decoded at reduced scale


def test_predict_skips_broken_real_files_naming_each_once(tmp_path, capsys):
    import shutil

    from campusgps.cli.main import main
    from campusgps.localizers.base import MeanLocalizer
    from conftest import make_toy_dataset

    model = MeanLocalizer().fit(make_toy_dataset(tmp_path / "toy", n_spots=4, views=2)).save(tmp_path / "m.cgps")
    photos = tmp_path / "photos"
    photos.mkdir()
    for rel in ("exifr/32d08f4a5eb10332506ebedbb9bc7257.jpg", "exifr/001.tif", "exifr/avif/Irvine_CA.avif",
                "exif-samples/heic/IMG_5195.HEIC"):
        shutil.copy(CORPUS / rel, photos / rel.rsplit("/", 1)[1])
    (photos / "notes.jpg").write_text("not a photo")
    rc = main(["predict", str(model), str(photos), "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert rc == 0, err
    skipped = [ln for ln in err.splitlines() if "skipped" in ln]
    assert len(skipped) == 2 and all(ln.count(str(photos)) == 1 for ln in skipped), skipped
    got = pd.read_csv(tmp_path / "p.csv")
    assert sorted(got["file"].map(lambda f: f.rsplit("/", 1)[1])) == ["001.tif", "IMG_5195.HEIC", "Irvine_CA.avif"]


def test_predict_on_the_whole_corpus_never_crashes(tmp_path, capsys):
    """Every image-named file of the corpus is located or skipped with a reason; no traceback."""
    from campusgps.cli.main import main
    from campusgps.localizers.base import MeanLocalizer, iter_image_files
    from conftest import make_toy_dataset

    model = MeanLocalizer().fit(make_toy_dataset(tmp_path / "toy", n_spots=4, views=2)).save(tmp_path / "m.cgps")
    files = iter_image_files([CORPUS])
    rc = main(["predict", str(model), str(CORPUS), "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err and "internal error" not in err, err[-2000:]
    skipped = [ln for ln in err.splitlines() if ": skipped " in ln]
    assert len(pd.read_csv(tmp_path / "p.csv")) + len(skipped) == len(files) >= 145
    assert len(skipped) <= 2, skipped  # only the truncated JPEG (and nothing else) is unreadable
