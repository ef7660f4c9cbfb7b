"""Accuracy as an `evaluate` module, for `evaluate.load("recipes/metrics/accuracy.py")` where the Hub is out of reach.

It returns what the Hub's ``glue``/``sst2`` module returns for SST-2 (``{"accuracy": fraction correct}``, its
``simple_accuracy``) and the Hub's ``accuracy`` module without sample weights, with NumPy alone (the Hub's modules
import scikit-learn and SciPy). `recipe_utils.load_metric` picks it when the Hub cannot be reached.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy: the fraction of predictions equal to their reference, (TP + TN) / N."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels.
    references (`list` of `int`): ground-truth labels.
Returns:
    accuracy (`float`): the fraction of predictions equal to their reference, in [0, 1].
Examples:
    >>> accuracy = evaluate.load("recipes/metrics/accuracy.py")
    >>> accuracy.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'accuracy': 0.75}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        return {"accuracy": float((np.asarray(predictions) == np.asarray(references)).mean())}
