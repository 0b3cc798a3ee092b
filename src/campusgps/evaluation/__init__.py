"""Evaluation: metrics, evaluate (metrics.json / predictions.csv / report.html), compare, audit, robustness."""
from campusgps.evaluation.metrics import radius_coverage, summarize
# Loading the submodule binds ``campusgps.evaluation.evaluate`` to it; importing the function from it right
# away rebinds the name to the function for good (later imports of the submodule find it loaded and leave
# the name alone), so ``from campusgps.evaluation import evaluate`` is the function whatever ran first.
from campusgps.evaluation.evaluate import evaluate

__all__ = ["evaluate", "summarize", "radius_coverage"]
