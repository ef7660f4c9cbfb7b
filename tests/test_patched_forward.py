"""Forwards patched on the instance: the roles are read on the meta copy, never by running the real model.

A closure over the original forward (TRL's `SFTTrainer`, hand-made wrappers) survives deepcopy pointing at the
original model; the copy's closures are rebuilt pointing at the copy, and a reference the copy still shares is
caught at its first touch and read through the class's own forward. Expected roles are the DESIGN.md reference
classification of GPT-2, written by hand.
"""

import logging
import types
import weakref

import pytest
import torch
from models import tiny_gpt2
from torch import nn

from hf_gammareg import classify_gammas

GPT2_ROLES = {
    "transformer.h.0.ln_1.weight": "branch",
    "transformer.h.0.ln_2.weight": "branch",
    "transformer.h.1.ln_1.weight": "branch",
    "transformer.h.1.ln_2.weight": "branch",
    "transformer.ln_f.weight": "head",
}


class RealCalls:
    """Counts calls of the real model's modules (hooks on each; the copy's modules are other objects)."""

    def __init__(self, model: nn.Module):
        self.real = {id(m) for m in model.modules()}
        self.calls = 0
        for m in model.modules():
            m.register_forward_pre_hook(self._hook)

    def _hook(self, module, _args):
        if id(module) in self.real:
            self.calls += 1


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, torch.get_rng_state()


def _assert_untouched(model, before):
    weights, rng = before
    assert torch.equal(torch.get_rng_state(), rng), "reading the roles drew from the RNG"
    after = model.state_dict()
    assert weights.keys() == after.keys()
    for name, value in weights.items():
        assert torch.equal(after[name], value), name
    assert model.training  # train mode, dropout on: a real forward would draw from the RNG


def _gpt2():
    torch.manual_seed(0)
    return tiny_gpt2().train()


def _batch():
    return {"input_ids": torch.tensor([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]])}


def _read_without_running(model, caplog, inputs) -> str:
    """Classify a patched tiny GPT-2 from ``inputs`` and check what every patched-forward case must hold: the
    DESIGN.md roles, no call of a real module, no RNG draw, no weight changed. Returns what it logged at INFO."""
    counter, before = RealCalls(model), _snapshot(model)
    with caplog.at_level(logging.INFO, logger="hf_gammareg"):
        report = classify_gammas(model, inputs=inputs)
    assert report.roles == GPT2_ROLES and report.unused == []
    assert counter.calls == 0
    _assert_untouched(model, before)
    return caplog.text


def test_closure_over_the_original_forward_reads_the_copy(caplog):
    model = _gpt2()
    original = model.forward

    def patched(*args, **kwargs):  # a wrapper as TRL writes one: it closes over the bound forward
        return original(*args, **kwargs)

    model.forward = patched
    log = _read_without_running(model, caplog, _batch())
    assert model.forward is patched  # the model itself keeps its patch
    assert "test_closure_over_the_original_forward_reads_the_copy.<locals>.patched" in log
    assert "closure pointed at the copy" in log


def test_hidden_reference_is_read_through_the_class_forward(caplog):
    model = _gpt2()
    holder = {"forward": model.forward}  # a reference the copy shares: nothing in the closure names the model

    def patched(*args, **kwargs):
        return holder["forward"](*args, **kwargs)

    model.forward = patched
    log = _read_without_running(model, caplog, _batch())
    assert "reached the original model (its module `transformer`" in log
    assert "class's own forward" in log and ".<locals>.patched" in log


class TopLevelScale(nn.Module):
    """A top-level forward that uses its own parameter before any submodule: only the dispatch mode sees it."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(8))
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(self.norm(x * self.w)) + x


def test_a_real_tensor_in_an_op_stops_the_copy(caplog):
    model = TopLevelScale()
    holder = [model]

    def patched(x):
        return type(holder[0]).forward(holder[0], x)

    model.forward = patched
    x = torch.randn(2, 8)
    counter, before = RealCalls(model), _snapshot(model)
    with caplog.at_level(logging.INFO, logger="hf_gammareg"):
        report = classify_gammas(model, inputs=x)
    assert report.roles == {"norm.weight": "branch"}
    assert counter.calls == 0
    weights, rng = before
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    assert "its tensor `w` met aten.mul.Tensor" in caplog.text


def test_forward_bound_to_the_instance_reads_as_before(caplog):
    # liger-kernel's way: a new function bound with MethodType, reaching the model through `self` only.
    model = _gpt2()

    def liger_forward(self, input_ids=None, **kwargs):
        return type(self).forward(self, input_ids=input_ids, **kwargs)

    model.forward = types.MethodType(liger_forward, model)
    log = _read_without_running(model, caplog, _batch())
    assert "replaced on the instance" not in log and "original model" not in log


class WeakSelf(nn.Module):
    """Reaches its submodules through a weak reference to itself, which deepcopy shares: a copy runs the original."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 8)
        self.drop = nn.Dropout(0.5)
        self._me = weakref.ref(self)

    def forward(self, x):
        me = self._me()
        return me.drop(me.fc(me.norm(x))) + x


def test_a_copy_that_still_reaches_the_model_warns_and_reads_the_model():
    torch.manual_seed(0)
    model, x = WeakSelf().train(), torch.randn(2, 8)
    before = _snapshot(model)
    with pytest.warns(UserWarning, match=r"meta copy reaches the model itself \(its module `norm` \(LayerNorm\)"):
        report = classify_gammas(model, inputs=x)
    assert report.roles == {"norm.weight": "branch"} and report.unused == []
    _assert_untouched(model, before)


def test_trl_fused_lm_head_patch_reads_the_copy(caplog):
    utils = pytest.importorskip("trl.trainer.utils")
    model = _gpt2()
    utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # what SFTTrainer.__init__ does
    assert "forward" in model.__dict__
    log = _read_without_running(model, caplog, {**_batch(), "labels": _batch()["input_ids"]})
    assert "trl.trainer.utils.add_fused_lm_head.<locals>._fused_forward" in log
