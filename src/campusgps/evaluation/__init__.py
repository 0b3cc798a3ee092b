"""Evaluation: metrics, evaluate (metrics.json / predictions.csv / report.html), compare, audit, robustness."""
from campusgps.evaluation.metrics import radius_coverage, summarize


def evaluate(*args, **kwargs):
    """See :func:`campusgps.evaluation.evaluate.evaluate`."""
    from campusgps.evaluation.evaluate import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


__all__ = ["evaluate", "summarize", "radius_coverage"]
