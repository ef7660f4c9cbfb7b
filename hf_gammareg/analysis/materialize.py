"""A copy of a model on the CPU with real values: the last pass for a model on ``meta`` whose forward sizes tensors
from values computed from its activations (token routing, predicted durations), which a meta pass does not have.

The copy's values are the model's own initialization (``initialize_weights`` for a Hugging Face model, which also
recomputes its non-persistent buffers such as rotary ``inv_freq`` and ``position_ids``; ``reset_parameters`` for
torch layers) under a fixed seed, on a baseline that leaves no tensor holding uninitialized memory. Roles are a
fact of the dataflow, so these values do not decide them; they only let the forward run.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from .trace import copy_with, full_numel

logger = logging.getLogger(__name__)

# The largest CPU copy the analysis makes on its own (parameters + buffers), and at most this fraction of the memory
# the machine has available: a copy is held alongside what the caller already holds, and filling it costs about a
# second per GiB. 4 GiB holds a 2-layer cut of most models' default configs (JetMoE's is 2.9 GiB), not a full-size
# language model, which has to be loaded (or given `inputs=` on a real device) by the user instead.
MAX_CPU_COPY_BYTES = 4 << 30
_AVAILABLE_FRACTION = 4  # at most 1/4 of the available memory
SEED = 0  # the copy's values are drawn under this seed, in a forked RNG: the same copy every time


def has_meta_tensors(model: nn.Module) -> bool:
    """Whether any parameter or buffer of ``model`` is on ``meta`` (a model built on meta, in whole or in part)."""
    return any(t.is_meta for t in model.parameters()) or any(t.is_meta for t in model.buffers())


def state_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s parameters and buffers, each tied tensor once."""
    seen: dict[int, int] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        seen[id(t)] = full_numel(t) * t.element_size()
    return sum(seen.values())


def cpu_copy_limit() -> int:
    """The largest copy to make: `MAX_CPU_COPY_BYTES`, or less where the machine has less memory available."""
    available = _available_memory()
    return MAX_CPU_COPY_BYTES if available is None else min(MAX_CPU_COPY_BYTES, available // _AVAILABLE_FRACTION)


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; else free pages), ``None`` if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def cpu_copy(model: nn.Module, repointed: list | None = None, zeroed: list | None = None) -> nn.Module:
    """A structural copy of ``model`` (as `meta_copy` makes it: ties, names and patched forwards kept) with every
    parameter and buffer on the CPU: a tensor the model holds on a real device keeps its values, one on ``meta`` gets
    the model's own initialization (`fill_values`). The model itself is not touched. ``zeroed`` gets the name of
    each tensor attribute made on meta, which holds zeros in the copy (no value of it exists)."""
    fresh: list[torch.Tensor] = []

    def on_cpu(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            return t.detach().to("cpu", copy=True)
        out = torch.empty_like(t, device="cpu")
        fresh.append(out)
        return out

    copied = copy_with(model, on_cpu, repointed)
    names = fill_values(copied, fresh)
    if zeroed is not None:
        zeroed.extend(names)
    return copied


def fill_values(model: nn.Module, fresh: list[torch.Tensor]) -> list[str]:
    """Give the tensors in ``fresh`` (allocated, no values yet) the values ``model`` initializes them with, under
    `SEED` in a forked RNG (the caller's random state is untouched). Returns the tensor attributes (not parameters
    or buffers) made on meta, which now hold zeros (`_plain_meta_tensors_on_cpu`)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(SEED)
        # NaN marks what no init below writes (an init never writes NaN); integers start at zero.
        floats = [t for t in fresh if t.is_floating_point()]
        for t in fresh:
            if t.is_floating_point():
                t.fill_(float("nan"))
            else:
                t.zero_()
        hf_models = _outermost_initializable(model)
        for name, module in model.named_modules():
            module.__dict__.pop("_is_hf_initialized", None)  # copied from a loaded model: it would skip the init
            reset = getattr(module, "reset_parameters", None)
            # Inside a Hugging Face model its own `_init_weights` decides (and covers torch's layers).
            if callable(reset) and not any(_within(name, outer) for outer, _ in hf_models):
                _run_init(reset, name or type(model).__name__, "reset_parameters")
        for name, module in hf_models:
            init = getattr(module, "initialize_weights", None) or getattr(module, "init_weights")
            _run_init(init, name or type(model).__name__, init.__name__)
        for t in floats:  # what no init wrote: small random values, never uninitialized memory or NaN
            unwritten = torch.isnan(t)
            if unwritten.any():
                t[unwritten] = torch.randn(int(unwritten.sum()), dtype=t.dtype) * 0.02
        return _plain_meta_tensors_on_cpu(model)


def _run_init(init, where: str, what: str) -> None:
    """One init call; one that fails leaves the baseline values (they do not decide any role)."""
    try:
        init()
    except Exception as exc:  # noqa: BLE001 - an init written for another device or state: keep the baseline
        logger.info("hf_gammareg: %s.%s() failed on the CPU copy (%s: %s); its tensors keep the baseline values",
                    where, what, type(exc).__name__, exc)


def _outermost_initializable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules with a Hugging Face ``initialize_weights``/``init_weights`` (and ``_init_weights``), outermost only:
    each initializes the sub-models inside it with their own ``_init_weights``."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        hf_init = getattr(module, "initialize_weights", None) or getattr(module, "init_weights", None)
        if not (callable(getattr(module, "_init_weights", None)) and callable(hf_init)):
            continue
        if any(_within(name, outer) for outer, _ in found):
            continue
        found.append((name, module))
    return found


def _within(name: str, outer: str) -> bool:
    """Whether module ``name`` is ``outer`` or inside it."""
    return outer == "" or name == outer or name.startswith(outer + ".")


def _plain_meta_tensors_on_cpu(model: nn.Module) -> list[str]:
    """Tensors a module holds as plain attributes (not parameters or buffers) and that were made on ``meta`` (Mimi's
    convolution paddings, computed from buffers at init): their values were never computed, so no init recovers
    them; zeros on the CPU, so that the forward can run at all. Returns their names."""
    zeroed = []
    for name, module in model.named_modules():
        for key, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and value.is_meta:
                setattr(module, key, torch.zeros_like(value, device="cpu"))
                zeroed.append(f"{name}.{key}" if name else key)
    return zeroed
