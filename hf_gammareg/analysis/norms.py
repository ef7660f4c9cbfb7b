"""Norm discovery: which modules are normalizations, and which parameter is each one's γ."""

from __future__ import annotations

from torch import nn

_TORCH_NORM_TYPES: tuple[type, ...] = (
    nn.modules.batchnorm._BatchNorm,  # BatchNorm1d/2d/3d and SyncBatchNorm
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def is_norm_module(module: nn.Module) -> bool:
    """Whether ``module`` normalizes its input (with or without a learnable scale)."""
    if isinstance(module, _TORCH_NORM_TYPES):
        return True
    # Custom norms (LlamaRMSNorm, T5LayerNorm, …) are recognised by name, but only as leaves: a
    # container called "PreNormBlock" must not swallow a whole block as one "normalization".
    name = type(module).__name__
    return "Norm" in name and not any(True for _ in module.children())


def norm_gamma(module: nn.Module) -> nn.Parameter | None:
    """The 1-D scale parameter a norm module owns directly, or ``None``."""
    weight = module._parameters.get("weight")
    if isinstance(weight, nn.Parameter) and weight.dim() == 1:
        return weight
    return None


def find_gammas(model: nn.Module) -> dict[str, str]:
    """``{parameter name: norm class name}`` for every γ in ``model`` (names as in ``named_parameters``)."""
    param_names = {id(p): n for n, p in model.named_parameters()}
    found: dict[str, str] = {}
    for module in model.modules():
        if not is_norm_module(module):
            continue
        gamma = norm_gamma(module)
        if gamma is not None and id(gamma) in param_names:
            found.setdefault(param_names[id(gamma)], type(module).__name__)
    return found

