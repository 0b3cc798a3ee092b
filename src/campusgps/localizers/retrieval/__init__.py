"""Method ``retrieval``: global image descriptors + FAISS nearest neighbours + robust position fusion.

Pipeline (fit):
  1. Backbone feature maps of every mapping (train) photo -> GeM pooling -> L2 normalisation
     (features come from the dataset's feature cache when it offers GeM, else they are computed).
  2. PCA-whitening fitted on train (regularised; on/off chosen on validation), L2 again.
  3. Optional geo-aligned projection head fine-tuned on the cached descriptors (multi-similarity loss with
     hard negatives = look-alike photos taken far away, and/or the seed's pairwise cosine-vs-distance loss);
     kept only when it lowers the validation median error.
  4. FAISS inner-product index of the reference descriptors, serialised into the bundle.
  5. Fusion settings (k, similarity temperature, kernel bandwidth) chosen on validation; ``radius_m``
     calibrated on validation (``calibration.fit_radius_scale``); out-of-area threshold from the validation
     top-1 similarities.
  6. Validation photos join the index afterwards (``add_val_to_index``), as more mapping photos.
  7. Low-light reference views (``night_views``, default 2): descriptors of a deterministic night rendering
     (darker, lower contrast, blue cast, noise) and dusk rendering (warm tint) of every reference are indexed
     too, mapped to the same reference; selection (steps 2-3, 5's fusion grid) uses the plain references,
     calibration the full index. Measured on the simulated small campus (seed 1, 252 queries, errors vs
     truth): night median 50.6 -> 35.9 m, dusk 33.2 -> 15.1 m, overall 13.4 -> 12.0 m, day 11.1 -> 11.7 m
     (paired: as many day queries better as worse); see the commit message for the table.

Prediction: top-k neighbours (low-light views merged: each reference once, at its best similarity), weights exp((s - s_top)/tau), robust fusion (density mode + geometric
median of the agreeing neighbours, see ``localizers.fusion.robust_fuse``), radius from the agreeing neighbours'
spread. Weak best similarity -> flag ``out_of_area`` and a large radius.

Modules: ``views`` (TTA and low-light renderings), ``descriptors`` (GeM descriptors, feature cache, PCA,
thumbnails), ``projection`` (whitening + geo-aligned head), ``index`` (FAISS search), ``fusion`` (neighbours ->
position, fusion grid), ``config`` (``RetrievalConfig``, the options), ``localizer`` (the ``RetrievalLocalizer``: fit, predict, references, bundles).
"""
from campusgps.localizers.retrieval.descriptors import gem, l2n, make_thumbnail
from campusgps.localizers.retrieval.index import merge_hits
from campusgps.localizers.retrieval.localizer import RetrievalConfig, RetrievalLocalizer
from campusgps.localizers.retrieval.views import low_light_view, photometric_variants

__all__ = ["RetrievalConfig", "RetrievalLocalizer", "gem", "l2n", "make_thumbnail", "merge_hits", "low_light_view",
           "photometric_variants"]
