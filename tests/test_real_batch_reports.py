"""What a real batch tells the user: γ it leaves without a role, and a forward that refuses it."""

import warnings

import pytest
import torch
from models import Conditioned, tiny_llama
from test_real_batch import Rows, _args
from test_scale_out import Broken
from torch import nn

from hf_gammareg import GammaAnalysisError, GammaRegTrainer, GammaRegTrainingArguments, classify_gammas


class EmbeddingsFirst(nn.Module):
    """Returns its normalized embeddings first and its logits second; a loss only when given labels."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.embed_norm = nn.LayerNorm(8)
        self.block_norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 8)
        self.final_norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, features, labels=None):
        e = self.embed_norm(self.embed(features))
        h = e + self.fc(torch.relu(self.block_norm(e)))
        logits = self.head(self.final_norm(h))
        out = {"embeddings": e, "logits": logits}
        if labels is not None:
            out = {"loss": nn.functional.cross_entropy(logits, labels), **out}
        return out


def _caught(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in caught if "did not take part" in str(w.message)]


def test_a_batch_whose_first_output_skips_the_network_says_so_and_names_the_remedy():
    features = torch.randn(2, 4)
    report, messages = _caught(lambda: classify_gammas(EmbeddingsFirst(), inputs={"features": features}))
    # The output read is `embeddings`: the embedding norm is it (head); the block and final norms ran, but that
    # output does not depend on them.
    assert report.roles == {"embed_norm.weight": "head"}
    assert report.unused == ["block_norm.weight", "final_norm.weight"]
    assert len(messages) == 1
    text = messages[0]
    assert "2 of 3 γ" in text and "`block_norm` (1)" in text and "`final_norm` (1)" in text  # the modules, named
    assert "`embeddings`" in text and "no loss" in text and "labels" in text and "inputs=batch" in text
    # With labels the model returns its loss, which depends on every norm: no warning.
    report, messages = _caught(lambda: classify_gammas(
        EmbeddingsFirst(), inputs={"features": features, "labels": torch.tensor([0, 2])}))
    assert messages == [] and report.unused == []
    assert report.roles == {"embed_norm.weight": "stream", "block_norm.weight": "branch", "final_norm.weight": "head"}


def test_a_batch_that_never_reaches_a_norm_warns_as_dummy_inputs_do():
    model = tiny_llama()
    model.extra_norm = nn.LayerNorm(32)  # never called in forward
    report, messages = _caught(lambda: classify_gammas(
        model, inputs={"input_ids": torch.ones(1, 5, dtype=torch.long), "labels": torch.ones(1, 5, dtype=torch.long)}))
    assert report.unused == ["extra_norm.weight"]
    assert len(messages) == 1
    assert "1 of 6 γ" in messages[0] and "`extra_norm`" in messages[0] and "the batch given (input_ids [1, 5]" \
        in messages[0] and "reaches those modules" in messages[0]


def test_a_refused_batch_quotes_the_model_s_exception_first():
    with pytest.raises(GammaAnalysisError) as info:
        classify_gammas(Conditioned(), inputs={"features": torch.randn(2, 5), "condition": torch.randn(2, 3)})
    text = str(info.value)
    assert text.startswith("could not run Conditioned's forward on the batch given as inputs= "
                           "({features [2, 5], condition [2, 3]}): on cpu it raised RuntimeError: mat1 and mat2")
    assert "dummy" not in text and "Pass `inputs=`" in text


def test_a_wrapper_that_can_take_a_dummy_batch_still_lists_it_after_the_model_s_exception(tmp_path):
    # `Broken.forward(x=None, labels=None)` takes the one tensor a guess from its first layer gives: that retry is
    # listed, after the training batch's error, and says where it came from (no config).
    trainer = GammaRegTrainer(model=Broken(), args=GammaRegTrainingArguments(**_args(tmp_path)),
                              train_dataset=Rows([{"x": torch.zeros(4)}] * 4))
    with pytest.raises(GammaAnalysisError) as info:
        trainer.create_optimizer()
    text = str(info.value)
    assert text.startswith("could not read the γ roles of Broken from the first training batch (x [2, 4]): its "
                           "forward raised RuntimeError: this forward is broken; nor on 1 dummy batch(es) guessed "
                           "from its layers")
