"""EXIF reading on real files written in the layouts phones use (Samsung, Apple), in every supported format."""
from __future__ import annotations

import datetime as dt
import io

import numpy as np
import piexif
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from campusgps.exif import load_image, open_image
from campusgps.exif.metadata import NOMINAL_UERE_M, gps_exif_bytes, gps_exif_dict, read_metadata


def two_tone(w=64, h=48):
    """Left half red, right half blue: orientation mistakes are visible."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2:] = (0, 0, 255)
    return a


def samsung_exif() -> bytes:
    """A Galaxy S21-like block: DMS rationals with /100 seconds, N/E refs, GPSAltitude, DOP, no HPE."""
    return piexif.dump({
        "0th": {piexif.ImageIFD.Make: b"samsung", piexif.ImageIFD.Model: b"SM-G991B",
                piexif.ImageIFD.Orientation: 1, piexif.ImageIFD.DateTime: b"2023:10:05 14:22:31"},
        "Exif": {piexif.ExifIFD.DateTimeOriginal: b"2023:10:05 14:22:31",
                 piexif.ExifIFD.OffsetTimeOriginal: b"+03:00",
                 piexif.ExifIFD.SubSecTimeOriginal: b"417",
                 piexif.ExifIFD.FocalLength: (540, 100),
                 piexif.ExifIFD.FocalLengthIn35mmFilm: 26},
        "GPS": {piexif.GPSIFD.GPSVersionID: (2, 2, 0, 0),
                piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: ((31, 1), (15, 1), (4321, 100)),
                piexif.GPSIFD.GPSLongitudeRef: b"E", piexif.GPSIFD.GPSLongitude: ((34, 1), (48, 1), (357, 100)),
                piexif.GPSIFD.GPSAltitudeRef: 0, piexif.GPSIFD.GPSAltitude: (28150, 100),
                piexif.GPSIFD.GPSDOP: (18, 10)},
        "1st": {}, "thumbnail": None,
    })


SAMSUNG_LAT = 31 + 15 / 60 + 43.21 / 3600
SAMSUNG_LON = 34 + 48 / 60 + 3.57 / 3600


def apple_exif(orientation=6) -> bytes:
    """An iPhone-like block: S/W refs, seconds /10000, GPSHPositioningError, below-sea-level altitude."""
    return piexif.dump({
        "0th": {piexif.ImageIFD.Make: b"Apple", piexif.ImageIFD.Model: b"iPhone 13 Pro",
                piexif.ImageIFD.Orientation: orientation},
        "Exif": {piexif.ExifIFD.DateTimeOriginal: b"2024:02:29 07:05:09",
                 piexif.ExifIFD.OffsetTimeOriginal: b"-03:00",
                 piexif.ExifIFD.FocalLength: (57, 10), piexif.ExifIFD.FocalLengthIn35mmFilm: 26},
        "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"S", piexif.GPSIFD.GPSLatitude: ((33, 1), (51, 1), (241234, 10000)),
                piexif.GPSIFD.GPSLongitudeRef: b"W", piexif.GPSIFD.GPSLongitude: ((151, 1), (12, 1), (551234, 10000)),
                piexif.GPSIFD.GPSAltitudeRef: 1, piexif.GPSIFD.GPSAltitude: (1250, 100),
                piexif.GPSIFD.GPSHPositioningError: (47, 10)},
        "1st": {}, "thumbnail": None,
    })


APPLE_LAT = -(33 + 51 / 60 + 24.1234 / 3600)
APPLE_LON = -(151 + 12 / 60 + 55.1234 / 3600)


def encode(arr, fmt, exif=None, **kw) -> bytes:
    b = io.BytesIO()
    if exif is not None:
        kw["exif"] = exif
    Image.fromarray(arr).save(b, fmt, **kw)
    return b.getvalue()


def test_samsung_jpeg_all_fields(tmp_path):
    p = tmp_path / "20231005_142231.jpg"
    p.write_bytes(encode(two_tone(), "JPEG", samsung_exif()))
    m = read_metadata(p)
    assert m.lat == pytest.approx(SAMSUNG_LAT, abs=1e-9) and m.lon == pytest.approx(SAMSUNG_LON, abs=1e-9)
    assert m.alt == pytest.approx(281.5)
    assert m.dop == pytest.approx(1.8) and m.accuracy_m == pytest.approx(1.8 * NOMINAL_UERE_M)
    assert m.taken_at == "2023-10-05T14:22:31.417000+03:00"
    assert m.camera == "samsung SM-G991B"
    assert m.focal_mm == pytest.approx(5.4) and m.focal_35mm == 26
    assert m.orientation == 1 and (m.width, m.height) == (64, 48) and m.format == "JPEG"


def test_apple_jpeg_south_west_refs_and_rotation(tmp_path):
    p = tmp_path / "IMG_0001.JPG"
    p.write_bytes(encode(two_tone(), "JPEG", apple_exif(orientation=6)))
    m = read_metadata(p)
    assert abs(m.lat - APPLE_LAT) < 1e-6 and abs(m.lon - APPLE_LON) < 1e-6
    assert m.lat < 0 and m.lon < 0
    assert m.alt == pytest.approx(-12.5)                      # GPSAltitudeRef 1 = below sea level
    assert m.accuracy_m == pytest.approx(4.7) and m.dop is None
    assert m.taken_at == "2024-02-29T07:05:09-03:00"
    assert m.camera == "Apple iPhone 13 Pro" and m.orientation == 6
    # orientation 6 = rotate 90 deg clockwise for display: the red left half becomes the top half
    px = load_image(p)
    assert px.shape == (64, 48, 3)
    assert px[5, 24, 0] > 200 and px[5, 24, 2] < 60
    assert px[-5, 24, 2] > 200 and px[-5, 24, 0] < 60


@pytest.mark.parametrize("orientation,top_is_red,shape", [(1, None, (48, 64)), (3, None, (48, 64)),
                                                          (6, True, (64, 48)), (8, False, (64, 48))])
def test_orientation_applied_before_pixels(orientation, top_is_red, shape):
    px = load_image(encode(two_tone(), "JPEG", gps_exif_bytes(1.0, 2.0, orientation=orientation)))
    assert px.shape[:2] == shape
    if orientation == 3:  # 180 deg: red moves to the right
        assert px[24, -5, 0] > 200 and px[24, 5, 2] > 200
    if top_is_red is not None:
        top = px[5, 24]
        assert (top[0] > 200) == top_is_red and (top[2] > 200) != top_is_red


def test_png_without_exif_has_no_gps():
    m = read_metadata(encode(two_tone(), "PNG"))
    assert not m.has_gps and m.lat is None and m.accuracy_m is None and m.taken_at is None
    assert m.orientation == 1 and m.format == "PNG"


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "HEIF", "WEBP"])
def test_gps_in_other_formats(fmt):
    data = encode(two_tone(), fmt, gps_exif_bytes(-12.3456789, 45.6789012, alt=12.0, accuracy_m=3.5,
                                                  make="Apple", model="iPhone 15", focal_35mm=24))
    m = read_metadata(data)
    assert abs(m.lat + 12.3456789) < 1e-9 and abs(m.lon - 45.6789012) < 1e-9
    assert m.alt == pytest.approx(12.0) and m.accuracy_m == pytest.approx(3.5)
    assert m.camera == "Apple iPhone 15" and m.focal_35mm == 24


def test_heic_rotation_is_applied_once():
    """pillow-heif rotates on decode and clears the tag; open_image must not rotate a second time."""
    data = encode(two_tone(), "HEIF", gps_exif_bytes(1.0, 2.0, orientation=6))
    px = load_image(data)
    assert px.shape[:2] == (64, 48) and px[5, 24, 0] > 200 and px[-5, 24, 2] > 200


def test_focal_35mm_computed_from_focal_plane_resolution():
    # a 1/2.3" sensor (6.17 x 4.55 mm) at 4000 x 2950 px, 4.3 mm lens, resolution in px per cm
    exif = piexif.dump({"0th": {}, "GPS": {}, "1st": {}, "thumbnail": None, "Exif": {
        piexif.ExifIFD.FocalLength: (43, 10),
        piexif.ExifIFD.FocalPlaneXResolution: (4000 * 1000, 617), piexif.ExifIFD.FocalPlaneYResolution: (2950 * 1000, 455),
        piexif.ExifIFD.FocalPlaneResolutionUnit: 3,
        piexif.ExifIFD.PixelXDimension: 4000, piexif.ExifIFD.PixelYDimension: 2950}})
    m = read_metadata(encode(two_tone(), "JPEG", exif))
    expected = 4.3 * np.hypot(36, 24) / np.hypot(6.17, 4.55)
    assert m.focal_35mm == pytest.approx(expected, abs=0.1)


def test_odd_gps_encodings():
    """Decimal degrees in one rational, string refs, zero-denominator rationals, GPS-only timestamp."""
    d = gps_exif_dict(0.0, 0.0)
    d["GPS"][piexif.GPSIFD.GPSLatitude] = ((451234567, 10000000),)  # 45.1234567 as one value
    d["GPS"][piexif.GPSIFD.GPSLatitudeRef] = b"S\x00"
    d["GPS"][piexif.GPSIFD.GPSLongitude] = ((7, 1), (30, 1), (0, 0))       # seconds 0/0: treated as 0
    d["GPS"][piexif.GPSIFD.GPSLongitudeRef] = b"W"
    d["GPS"][piexif.GPSIFD.GPSAltitude] = (0, 0)                          # unknown altitude
    d["GPS"][piexif.GPSIFD.GPSDateStamp] = b"2022:01:02"
    d["GPS"][piexif.GPSIFD.GPSTimeStamp] = ((23, 1), (59, 1), (58, 1))
    m = read_metadata(encode(two_tone(), "JPEG", piexif.dump(d)))
    assert m.lat == pytest.approx(-45.1234567, abs=1e-9)
    assert m.lon == pytest.approx(-7.5, abs=1e-12)
    assert m.alt is None
    assert m.taken_at == "2022-01-02T23:59:58+00:00"


def test_zero_denominator_degrees_mean_no_position():
    d = gps_exif_dict(10.0, 20.0)
    d["GPS"][piexif.GPSIFD.GPSLatitude] = ((0, 0), (0, 0), (0, 0))
    m = read_metadata(encode(two_tone(), "JPEG", piexif.dump(d)))
    assert not m.has_gps


def test_writer_time_and_heading_round_trip():
    t = dt.datetime(2024, 5, 1, 12, 30, 5, 250000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    m = read_metadata(encode(two_tone(), "JPEG", gps_exif_bytes(31.0, 34.0, taken_at=t, heading_deg=370.5)))
    assert m.taken_at == "2024-05-01T12:30:05.250000+02:00"
    assert m.heading_deg == pytest.approx(10.5)


@settings(max_examples=40, deadline=None)
@given(lat=st.floats(-89.999, 89.999), lon=st.floats(-179.999, 179.999))
def test_writer_reader_round_trip(lat, lon):
    m = read_metadata(encode(two_tone(8, 8), "JPEG", gps_exif_bytes(lat, lon)))
    assert abs(m.lat - lat) < 1e-9 and abs(m.lon - lon) < 1e-9


def test_writer_rejects_out_of_range():
    with pytest.raises(ValueError):
        gps_exif_bytes(91.0, 0.0)


def test_not_an_image_raises_clear_reason():
    from campusgps.errors import ImageError

    with pytest.raises(ImageError) as e:
        open_image(b"definitely not a photo" * 20)
    assert e.value.reason == "not_an_image"
