"""Local frame and distances: property tests against pyproj's ellipsoidal geodesic."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campusgps.geo.frame import LocalFrame, bearing_deg, geodesic_m, haversine_m, haversine_torch

lats = st.floats(-80.0, 80.0)
lons = st.floats(-179.9, 179.9)
offsets = st.floats(-5000.0, 5000.0)


@settings(max_examples=60, deadline=None)
@given(lat0=lats, lon0=lons, e=offsets, n=offsets)
def test_local_frame_round_trip(lat0, lon0, e, n):
    f = LocalFrame(lat0, lon0)
    lat, lon = f.to_wgs84(e, n)
    e2, n2 = f.to_local(lat, lon)
    # PROJ's aeqd snaps points within 1e-10 Earth radii (0.64 mm) of the origin onto it; elsewhere it is exact
    assert abs(float(e2) - e) < 1e-3 and abs(float(n2) - n) < 1e-3
    if math.hypot(e, n) > 0.01:
        assert abs(float(e2) - e) < 1e-6 and abs(float(n2) - n) < 1e-6


@settings(max_examples=60, deadline=None)
@given(lat0=lats.filter(lambda v: v == 0.0 or abs(v) > 1e-6), lon0=lons, e=offsets, n=offsets)
def test_local_distance_from_origin_is_geodesic(lat0, lon0, e, n):
    """aeqd keeps true distances from the origin: |(e, n)| equals the ellipsoidal distance.

    Origins within 1e-6 deg of the equator but not on it are left out: PROJ's aeqd snaps them to the equator
    (hypothesis found lat0 = 6.45e-9 mapping (0, 0) 1.01 mm away), a library limit no campus meets."""
    f = LocalFrame(lat0, lon0)
    lat, lon = f.to_wgs84(e, n)
    assert float(geodesic_m(lat0, lon0, lat, lon)) == pytest.approx(math.hypot(e, n), abs=1e-3)


@settings(max_examples=100, deadline=None)
@given(lat1=lats, lon1=lons, dlat=st.floats(-0.1, 0.1), dlon=st.floats(-0.1, 0.1))
def test_haversine_close_to_ellipsoid(lat1, lon1, dlat, dlon):
    lat2, lon2 = lat1 + dlat, float(np.clip(lon1 + dlon, -180, 180))
    h, g = float(haversine_m(lat1, lon1, lat2, lon2)), float(geodesic_m(lat1, lon1, lat2, lon2))
    # the sphere differs from WGS84 by at most ~0.56 % in distance
    assert h == pytest.approx(g, rel=0.006, abs=1e-3)
    assert float(haversine_m(lat2, lon2, lat1, lon1)) == pytest.approx(h, abs=1e-6)


def test_haversine_vectorised_and_zero():
    lat = np.array([31.0, 31.0, -45.0])
    lon = np.array([34.0, 34.001, 170.0])
    d = haversine_m(lat, lon, lat[:, None], lon[:, None])
    assert d.shape == (3, 3) and np.allclose(np.diag(d), 0.0)
    assert d[0, 1] == pytest.approx(95.3, abs=0.5)  # 0.001 deg of longitude at 31 N


def test_torch_haversine_matches_numpy_and_has_finite_gradients_at_zero():
    torch = pytest.importorskip("torch")
    lat = torch.tensor([31.2620, 31.2620, -12.5], dtype=torch.float64, requires_grad=True)
    lon = torch.tensor([34.8010, 34.8020, 100.0], dtype=torch.float64, requires_grad=True)
    tlat = torch.tensor([31.2620, 31.2630, -12.5], dtype=torch.float64)
    tlon = torch.tensor([34.8010, 34.8010, 100.0], dtype=torch.float64)  # rows 0 and 2: prediction == target
    d = haversine_torch(lat, lon, tlat, tlon)
    ref = haversine_m(tlat.numpy(), tlon.numpy(), lat.detach().numpy(), lon.detach().numpy())
    assert np.allclose(d.detach().numpy(), ref, atol=1e-3)
    assert d[0].item() < 1e-6 and d[2].item() < 1e-6  # no bias at zero distance
    d.sum().backward()
    assert torch.isfinite(lat.grad).all() and torch.isfinite(lon.grad).all()
    assert lat.grad[1] < 0  # moving the prediction north (towards the target) shortens the distance


def test_torch_haversine_float32_gradients_finite():
    torch = pytest.importorskip("torch")
    p = torch.tensor([[31.2620, 34.8010]] * 4, dtype=torch.float32, requires_grad=True)
    t = p.detach().clone()
    t[1, 0] += 1e-5
    d = haversine_torch(p[:, 0], p[:, 1], t[:, 0], t[:, 1])
    d.mean().backward()
    assert torch.isfinite(p.grad).all()
    assert d[0].item() < 1e-3 and d[1].item() == pytest.approx(1.11, abs=0.2)


def test_bearing_cardinal_directions():
    assert float(bearing_deg(31.0, 34.0, 31.01, 34.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(bearing_deg(31.0, 34.0, 31.0, 34.01)) == pytest.approx(90.0, abs=0.01)
    assert float(bearing_deg(31.0, 34.0, 30.99, 34.0)) == pytest.approx(180.0, abs=1e-6)
    assert float(bearing_deg(31.0, 34.0, 31.0, 33.99)) == pytest.approx(270.0, abs=0.01)


def test_frame_save_load_and_from_points(tmp_path):
    f = LocalFrame.from_points([31.0, 31.2, 31.1, 50.0], [34.0, 34.2, 34.1, 10.0])
    assert (f.lat0, f.lon0) == pytest.approx((31.15, 34.05))  # the median ignores the outlier
    f.save(tmp_path / "frame.json")
    g = LocalFrame.load(tmp_path / "frame.json")
    assert g == f
    assert np.allclose(g.to_local(31.2, 34.2), f.to_local(31.2, 34.2))
    with pytest.raises(ValueError):
        LocalFrame(95.0, 0.0)
