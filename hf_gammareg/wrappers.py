"""Model wrappers (torch.compile, DDP, FSDP1/2, activation checkpointing) and the parameter names they change."""

from __future__ import annotations

import sys

from torch import nn

__all__ = ["is_dtensor", "is_fsdp1", "parameter_name_map", "unwrap_model"]

# Wrappers that add a prefix to parameter names: torch.compile (`_orig_mod.`), DDP/DataParallel
# (`module.`), FSDP1 (`_fsdp_wrapped_module.`). Roles are computed on the unwrapped model and the
# names mapped back. FSDP2 (`fully_shard`) keeps the names and changes the parameters into DTensors.
_WRAPPER_ATTRS = ("_orig_mod", "module", "_fsdp_wrapped_module")
# Segments that wrappers insert *inside* names, at any depth: FSDP1 wraps each auto-wrapped layer
# (`layer.0._fsdp_wrapped_module.attention…`), activation checkpointing wraps blocks
# (`_checkpoint_wrapped_module`), and a compiled submodule keeps `_orig_mod`.
_INNER_WRAPPER_SEGMENTS = frozenset(("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"))


def unwrap_model(model: nn.Module) -> tuple[nn.Module, str]:
    """Strip torch.compile/DDP/FSDP wrappers; returns ``(inner model, name prefix the wrappers add)``."""
    prefix = ""
    while True:
        for attr in _WRAPPER_ATTRS:
            inner = getattr(model, attr, None)
            if isinstance(inner, nn.Module) and attr in dict(model.named_children()):
                model, prefix = inner, f"{prefix}{attr}."
                break
        else:
            return model, prefix


def parameter_name_map(model: nn.Module) -> dict[str, str]:
    """``{name in the unwrapped model: name in model}`` for every parameter of a (wrapped) ``model``."""
    _, prefix = unwrap_model(model)
    out: dict[str, str] = {}
    for name, _ in model.named_parameters():
        inner = name.removeprefix(prefix)
        out.setdefault(".".join(s for s in inner.split(".") if s not in _INNER_WRAPPER_SEGMENTS), name)
    return out


def is_dtensor(tensor) -> bool:
    """Whether ``tensor`` is a `DTensor` (FSDP2, tensor parallel): one shard per rank, not the whole tensor.

    Looked up in ``sys.modules`` so that a process that never imported DTensor pays nothing for the check.
    """
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def is_fsdp1(model: nn.Module) -> bool:
    """Whether FSDP1 has wrapped ``model`` (its parameters are then flat shards)."""
    return any(type(m).__name__ == "FullyShardedDataParallel" for m in model.modules())
