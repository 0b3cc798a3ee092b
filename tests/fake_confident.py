"""A small localizer whose answers carry confidence and alternatives (test helper for everything that shows them).

It answers near the training centroid; its confidence is a fixed function of the photo's mean red level
(rescaled by the training photos' 10th..90th percentile), so a test can predict it from the image alone.
Less confident answers carry more alternatives: two below 0.6, one below 0.85, none above. Registered as
``confident-fake`` so its bundles load with ``Localizer.load`` in the test process.
"""
from __future__ import annotations

import numpy as np

from campusgps.localizers.base import Localizer, Prediction, register

ALT_OFFSETS_M = ((-25.0, 0.0), (0.0, 25.0))


def red_level(img: np.ndarray) -> float:
    return float(np.asarray(img)[..., 0].mean())


@register
class ConfidentFake(Localizer):
    method = "confident-fake"

    def fit(self, dataset, **opts):
        train = dataset.training_rows()
        self.frame = dataset.frame
        self.ref_en = train.en()
        self.center = self.ref_en.mean(axis=0)
        reds = [red_level(train.load_image(i)) for i in range(len(train))]
        self.lo, self.hi = float(np.percentile(reds, 10)), float(np.percentile(reds, 90))
        return self

    def confidence_of(self, img) -> float:
        return float(np.clip((red_level(img) - self.lo) / max(self.hi - self.lo, 1e-6), 0.02, 0.98))

    def predict_arrays(self, images, exclude_ids=()):
        n = len(images)
        conf = np.array([self.confidence_of(im) for im in images])
        east = self.center[0] + (conf - 0.5) * 10.0
        north = np.full(n, self.center[1])
        alts = []
        for c in conf:
            k = 2 if c < 0.6 else 1 if c < 0.85 else 0
            alts.append([{"east": float(self.center[0] + de), "north": float(self.center[1] + dn),
                          "radius_m": 15.0, "probability": float((1 - c) * (0.5, 0.25)[j])}
                         for j, (de, dn) in enumerate(ALT_OFFSETS_M[:k])])
        return Prediction(east=east, north=north, radius_m=10.0 + 30.0 * (1 - conf), confidence=conf,
                          alternatives=alts)

    def input_max_side(self):
        return 64

    def reference_positions(self):
        lat, lon = self.frame.to_wgs84(self.ref_en[:, 0], self.ref_en[:, 1])
        return {"lat": lat, "lon": lon}

    def _state(self):
        return ({"center": np.asarray(self.center, np.float64), "ref_en": np.asarray(self.ref_en, np.float64)},
                {"lo": self.lo, "hi": self.hi})

    @classmethod
    def _from_state(cls, tensors, meta):
        loc = cls()
        loc.center = np.asarray(tensors["center"], np.float64)
        loc.ref_en = np.asarray(tensors["ref_en"], np.float64)
        loc.lo, loc.hi = float(meta["lo"]), float(meta["hi"])
        return loc
