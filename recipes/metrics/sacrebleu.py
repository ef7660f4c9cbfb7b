"""sacreBLEU as an `evaluate` module, for `evaluate.load("recipes/metrics/sacrebleu.py")` where the Hub is out of reach.

The same inputs, options and outputs as the Hub's ``sacrebleu`` module (Post, 2018): ``predictions`` (strings),
``references`` (a list of references per prediction, the same number for each, or one string each), sacreBLEU's
``corpus_bleu`` options, and ``score``, ``counts``, ``totals``, ``precisions``, ``bp``, ``sys_len``, ``ref_len``.
`recipe_utils.load_metric` picks it when the Hub cannot be reached.
"""

import datasets
import evaluate
import sacrebleu as scb

_CITATION = """@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    url = "https://www.aclweb.org/anthology/W18-6319",
    pages = "186--191",
}"""
_DESCRIPTION = "sacreBLEU: shareable, comparable, reproducible BLEU scores (corpus BLEU with a fixed tokenization)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): the hypotheses.
    references (`list` of `list` of `str`, or `list` of `str`): the references of each hypothesis.
    smooth_method (`str`): 'none', 'floor', 'add-k' or 'exp' (default).
    smooth_value (`float`): for 'floor' (default 0.1) and 'add-k' (default 1).
    tokenize (`str`): sacreBLEU's tokenizer ('13a' when None, 'none', 'intl', 'zh', 'ja-mecab', ...).
    lowercase (`bool`): lowercase before scoring. force (`bool`): score text that looks tokenized.
    use_effective_order (`bool`): stop at the largest n-gram order with a match (sentence-level BLEU).
Returns:
    score, counts, totals, precisions, bp, sys_len, ref_len: sacreBLEU's `BLEUScore` fields.
Examples:
    >>> sacrebleu = evaluate.load("recipes/metrics/sacrebleu.py")
    >>> sacrebleu.compute(predictions=["hello there general kenobi"], references=[["hello there general kenobi"]])
    ... ["score"]
    100.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Sacrebleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string"),
                                   "references": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
        )

    def _compute(self, predictions, references, smooth_method="exp", smooth_value=None, force=False, lowercase=False,
                 tokenize=None, use_effective_order=False):
        if references and isinstance(references[0], str):
            references = [[ref] for ref in references]
        per_prediction = len(references[0]) if references else 1
        if any(len(refs) != per_prediction for refs in references):
            raise ValueError("sacrebleu needs the same number of references for each prediction")
        streams = [[refs[i] for refs in references] for i in range(per_prediction)]  # sacreBLEU's layout
        output = scb.corpus_bleu(predictions, streams, smooth_method=smooth_method, smooth_value=smooth_value,
                                 force=force, lowercase=lowercase, use_effective_order=use_effective_order,
                                 **({} if tokenize is None else {"tokenize": tokenize}))
        return {"score": output.score, "counts": output.counts, "totals": output.totals,
                "precisions": output.precisions, "bp": output.bp, "sys_len": output.sys_len, "ref_len": output.ref_len}
