"""Dummy inputs: one tiny batch that runs a model's forward, built from its config and signature."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from ..roles import GammaAnalysisError

_BATCH, _SEQ = 2, 8  # batch 2: BatchNorm refuses a single value per channel



def _accepts(forward, name: str) -> bool:
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _first_param_module(model: nn.Module) -> nn.Module | None:
    for module in model.modules():
        if any(True for _ in module.parameters(recurse=False)):
            return module
    return None


def dummy_inputs(model: nn.Module, device: torch.device | str = "cpu") -> dict[str, torch.Tensor] | tuple:
    """Small inputs that run ``model``'s forward: from its HF config where it has one.

    Text models get ``input_ids`` (and ``decoder_input_ids`` for encoder-decoders), vision models
    ``pixel_values``. Plain ``nn.Module`` s get one tensor shaped for their first layer.
    """
    config = getattr(model, "config", None)
    forward = model.forward
    # Float inputs in the model's own dtype: a bf16/fp16 model refuses float32 activations.
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())
    if config is not None:
        main = getattr(model, "main_input_name", "input_ids")
        inputs: dict[str, torch.Tensor] = {}
        if main == "pixel_values":
            size = getattr(config, "image_size", 32)
            size = size[0] if isinstance(size, (list, tuple)) else size
            channels = getattr(config, "num_channels", 3)
            inputs["pixel_values"] = torch.zeros(_BATCH, channels, size, size, device=device, dtype=dtype)
        elif main == "input_ids":
            inputs["input_ids"] = torch.ones(_BATCH, _SEQ, dtype=torch.long, device=device)
        else:
            raise GammaAnalysisError(
                f"cannot build dummy inputs for a model whose main input is {main!r}; "
                "pass `inputs=` to classify_gammas (a dict of tensors for one tiny batch)"
            )
        if getattr(config, "is_encoder_decoder", False) and _accepts(forward, "decoder_input_ids"):
            inputs["decoder_input_ids"] = torch.ones(_BATCH, _SEQ, dtype=torch.long, device=device)
        if _accepts(forward, "use_cache"):
            inputs["use_cache"] = False  # caches are extra outputs that are not the loss
        return inputs
    first = _first_param_module(model)
    if isinstance(first, nn.modules.conv._ConvNd):
        spatial = (32,) * (first.weight.dim() - 2)
        return (torch.zeros(_BATCH, first.in_channels, *spatial, device=device, dtype=dtype),)
    if isinstance(first, nn.Linear):
        return (torch.zeros(_BATCH, first.in_features, device=device, dtype=dtype),)
    if isinstance(first, nn.Embedding):
        return (torch.zeros(_BATCH, _SEQ, dtype=torch.long, device=device),)
    shape = getattr(first, "normalized_shape", None)  # LayerNorm / RMSNorm first
    if shape is not None:
        return (torch.zeros(_BATCH, *shape, device=device, dtype=dtype),)
    raise GammaAnalysisError(
        f"cannot guess inputs for {type(model).__name__} (no HF config, first layer "
        f"{type(first).__name__ if first is not None else 'none'}); pass `inputs=` to classify_gammas"
    )

