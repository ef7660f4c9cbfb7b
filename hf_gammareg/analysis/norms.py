"""Norm discovery: which modules may be normalizations, and which parameter would be each one's γ.

A normalization is a module whose forward divides its input by a data-dependent statistic of it
(mean / variance / RMS). Only a forward pass shows that, so this module names *candidates* — torch's
norm layers, modules that own a 1-D scale parameter, leaf classes whose name says ``Norm`` — and
:mod:`hf_gammareg.analysis.classify` keeps those whose recorded computation really normalizes
(:func:`normalizes`). MobileBERT's ``NoNorm`` (``x·w + b``) owns a 1-D weight but computes no
statistic, so it is not a norm; I-BERT's ``IntLayerNorm`` has a child module but computes mean and
variance itself, so it is one.
"""

from __future__ import annotations

import re

from torch import nn

_TORCH_NORM_TYPES: tuple[type, ...] = (
    nn.modules.batchnorm._BatchNorm,  # BatchNorm1d/2d/3d and SyncBatchNorm
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


# Autograd node names (``…Backward<N>`` stripped) of a normalization computed by hand: a statistic of
# the input, and a division by (a root of) it.
_STATISTIC_OPS = frozenset("Mean Var VarMean Std StdMean Norm LinalgVectorNorm".split())
_DIVIDING_OPS = frozenset("Rsqrt Sqrt Div Reciprocal Pow".split())
NATIVE_NORM_RE = re.compile(r"(LayerNorm|BatchNorm|GroupNorm|RmsNorm|RMSNorm|InstanceNorm)")


def is_torch_norm(module: nn.Module) -> bool:
    """torch's own normalization layers: norms by construction."""
    return isinstance(module, _TORCH_NORM_TYPES)


def is_norm_module(module: nn.Module) -> bool:
    """Whether ``module`` looks like a normalization without running it: a torch norm layer, or a leaf
    whose class name says ``Norm``. Used where no forward pass is run (:func:`find_gammas`) and for norms
    called outside autograd; :func:`classify_gammas` decides from behaviour instead."""
    if isinstance(module, _TORCH_NORM_TYPES):
        return True
    # Custom norms (LlamaRMSNorm, T5LayerNorm, …) are recognised by name, but only as leaves: a
    # container called "PreNormBlock" must not swallow a whole block as one "normalization".
    name = type(module).__name__
    return "Norm" in name and not any(True for _ in module.children())


def norm_gamma(module: nn.Module) -> nn.Parameter | None:
    """The 1-D scale parameter a (candidate) norm module owns directly — ``weight``, else ``gamma`` — or ``None``."""
    for attr in ("weight", "gamma"):
        param = module._parameters.get(attr)
        if isinstance(param, nn.Parameter) and param.dim() == 1:
            return param
    return None


def is_candidate(module: nn.Module) -> bool:
    """Whether the forward pass must check ``module`` for normalization: a torch norm layer, a module
    that owns a 1-D scale parameter, or a parameter-free leaf named like a norm."""
    return is_torch_norm(module) or norm_gamma(module) is not None or is_norm_module(module)


def normalizes(own_ops: set[str]) -> bool:
    """Whether a module call whose own autograd nodes have these op names normalizes its input."""
    if any(NATIVE_NORM_RE.search(op) for op in own_ops):
        return True
    return bool(own_ops & _STATISTIC_OPS) and bool(own_ops & _DIVIDING_OPS)


def find_gammas(model: nn.Module) -> dict[str, str]:
    """``{parameter name: norm class name}`` for the γ of ``model``'s norm-looking modules, without a forward
    pass (names as in ``named_parameters``). :func:`classify_gammas` is the authority: it keeps the norms that
    really normalize and adds γ-like layer-scale parameters; its ``report.norm_types`` is the exact list."""
    param_names = {id(p): n for n, p in model.named_parameters()}
    found: dict[str, str] = {}
    for module in model.modules():
        if not is_norm_module(module):
            continue
        gamma = norm_gamma(module)
        if gamma is not None and id(gamma) in param_names:
            found.setdefault(param_names[id(gamma)], type(module).__name__)
    return found

