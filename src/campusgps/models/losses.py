"""Position losses. Predictions and targets are east/north normalised by the training extent (``scale`` m).

* ``haversine``     mean distance in metres. In the dataset's azimuthal-equidistant local frame the Euclidean
                    distance equals the geodesic (haversine) distance to well under a millimetre on a campus;
                    :func:`haversine_latlon` is the same loss on WGS84 degrees via ``geo.haversine_torch``.
* ``huber``         Huber on the distance (metres, ``delta_m``): quadratic near the truth, linear beyond.
* ``mse``           mean squared error of the normalised coordinates.
* ``mse+geodesic``  mse + distance / scale (the seeds' combined variant).
* ``gaussian-nll``  isotropic 2-D Gaussian negative log-likelihood with a per-image sigma (needs a sigma
                    output), so the predicted radius means something.

With a cells head (``models/heads.py``) :func:`cells_loss` adds the cross-entropy against soft cell targets
to the chosen position loss (metre-valued losses divided by ``scale`` so both terms are O(1)).

``sigma_nll(..., detach_mu=True)`` trains a sigma output alongside any loss without moving the position.
"""
from __future__ import annotations

LOSSES = ("haversine", "huber", "mse", "mse+geodesic", "gaussian-nll")
_EPS_M = 1e-3  # metres; keeps the gradient of the distance finite at zero


def distance_m(mu, target, scale: float):
    import torch

    d2 = ((mu.float() - target.float()) ** 2).sum(dim=1) * (scale * scale)
    return torch.sqrt(d2 + _EPS_M ** 2)


def sigma_nll(mu, log_sigma, target, detach_mu: bool = False):
    """Per-sample NLL of a 2-D isotropic Gaussian (normalised units; constant dropped)."""
    import torch

    if detach_mu:
        mu = mu.detach()
    d2 = ((mu.float() - target.float()) ** 2).sum(dim=1)
    ls = log_sigma.float()
    return 0.5 * d2 * torch.exp(-2 * ls) + 2 * ls


def position_loss(name: str, mu, log_sigma, target, scale: float, delta_m: float = 5.0):
    """Mean loss over the batch (a 0-dim tensor)."""
    import torch

    if name == "haversine":
        return distance_m(mu, target, scale).mean()
    if name == "huber":
        d = distance_m(mu, target, scale)
        return torch.where(d < delta_m, 0.5 * d * d / delta_m, d - 0.5 * delta_m).mean()
    if name == "mse":
        return ((mu.float() - target.float()) ** 2).sum(dim=1).mean()
    if name == "mse+geodesic":
        return ((mu.float() - target.float()) ** 2).sum(dim=1).mean() + (distance_m(mu, target, scale) / scale).mean()
    if name == "gaussian-nll":
        if log_sigma is None:
            raise ValueError("gaussian-nll needs a head with a sigma output (predict_sigma=True)")
        return sigma_nll(mu, log_sigma, target).mean()
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")


def total_loss(name: str, mu, log_sigma, target, scale: float, delta_m: float = 5.0):
    """Position loss plus, when the head predicts sigma and the loss is not already the NLL, a sigma NLL on
    the detached position (so sigma learns the error size without changing where the position goes)."""
    loss = position_loss(name, mu, log_sigma, target, scale, delta_m)
    if log_sigma is not None and name != "gaussian-nll":
        loss = loss + 0.1 * sigma_nll(mu, log_sigma, target, detach_mu=True).mean()
    return loss


def cells_loss(name: str, mu, log_sigma, logits, cell_targets, target, scale: float, delta_m: float = 5.0):
    """Cells head: cross-entropy(soft cell targets) + the position loss of the expected position (+ sigma NLL)."""
    import torch

    ce = -(cell_targets * torch.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()
    pos = total_loss(name, mu, log_sigma, target, scale, delta_m)
    if name in ("haversine", "huber"):  # metres -> normalised units (sigma term unchanged, it is small)
        pos = pos / scale
    return ce + pos


def haversine_latlon(pred_latlon, true_latlon):
    """Mean great-circle distance (m) between (N, 2) lat/lon tensors in degrees (differentiable)."""
    from campusgps.geo.frame import haversine_torch

    return haversine_torch(pred_latlon[:, 0], pred_latlon[:, 1], true_latlon[:, 0], true_latlon[:, 1]).mean()
