"""Offset scales: a γ applied as ``c + w`` rather than ``w`` (docs/design.md § Offset scales).

Gemma's RMSNorm multiplies by ``1 + w``, Nemotron's ``LayerNorm1P`` passes ``w + 1`` to ``layer_norm``, Moonshine's
streaming norm adds ``unit_offset``. Weight decay on such a ``w`` pulls the *scale* toward ``c``, not toward 0. The
graph decides it: every use of the parameter is an addition of a constant (a Python number, or a tensor that needs
no gradient and is no larger than the parameter), reached through casts and views only, and the sum goes on — again
through casts and views — into a multiply or a native norm op.

Autograd keeps no value for a constant operand (``1.0 + w`` records ``AddBackward0`` with an empty edge), so
:class:`ConstantAdditions` notes ``c`` by the addition's autograd sequence number while the norms' forwards run.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch.overrides import TorchFunctionMode

from .graph import Graph, op_name
from .norms import NATIVE_NORM_RE, is_candidate

# `w + c`, `c + w`, `torch.add(w, c)`, `w += c`: what an offset can be written as.
_ADDS = frozenset((torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__iadd__, torch.Tensor.add,
                   torch.Tensor.add_, torch.add))
# What the parameter may pass through between itself, the addition and the multiply.
_CASTS_AND_VIEWS = frozenset("""ToCopy View Reshape ReshapeAlias UnsafeView Expand Unsqueeze Squeeze SqueezeDim T
    Transpose Permute Clone Alias Contiguous Flatten""".split())
_SCALES = frozenset(("Mul",))
_HOPS = 6


def _per_channel(tensor: torch.Tensor) -> bool:
    return sum(1 for d in tensor.shape if d > 1) <= 1


class _Additions(TorchFunctionMode):
    """``found[seq] = c`` for every addition of a constant ``c`` to a per-channel tensor that requires grad (``seq``:
    the sum's autograd sequence number). Most are not offsets (``variance + eps``); :func:`offset_scales` keeps those
    the graph shows to be a γ's offset. A tensor constant counts only where its value is known here (off ``meta``)
    and the same in every element."""

    def __init__(self):
        super().__init__()
        self.found: dict[int, float] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _ADDS and len(args) == 2:
            self._note(func, args, kwargs.get("alpha", 1), out)
        return out

    def _note(self, func, args, alpha, out) -> None:
        if not isinstance(out, torch.Tensor) or out.grad_fn is None or not _per_channel(out):
            return
        a, b = args
        if func is torch.Tensor.__radd__:
            a, b = b, a  # `c + w`: the operands in the order the sum has them
        if isinstance(a, torch.Tensor) and a.requires_grad:
            constant, scale = _constant(b, a), alpha  # w + α·c
        elif isinstance(b, torch.Tensor) and b.requires_grad and alpha == 1:
            constant, scale = _constant(a, b), 1  # c + w
        else:
            return
        if constant is not None and isinstance(scale, numbers.Real) and not isinstance(scale, bool):
            self.found[out.grad_fn._sequence_nr()] = float(constant * scale)


class ConstantAdditions:
    """While active, ``found`` collects the constants added inside the calls of ``model``'s candidate norms (the
    modules ``is_candidate`` names: an offset is part of the norm that applies it). The torch-function mode that reads
    them is on only during those calls, so the rest of the forward pays nothing for it."""

    def __init__(self, model: torch.nn.Module):
        self._norms = {id(m) for m in model.modules() if is_candidate(m)}
        self._mode = _Additions()
        self.found = self._mode.found
        self._depth = 0
        self._handles = []

    def __enter__(self):
        from torch.nn.modules import module as module_lib

        norms, mode = self._norms, self._mode

        def pre(mod, _args):
            if id(mod) in norms:
                if not self._depth:
                    mode.__enter__()
                self._depth += 1

        def post(mod, _args, _output):
            if id(mod) in norms and self._depth:
                self._depth -= 1
                if not self._depth:
                    mode.__exit__(None, None, None)

        self._handles = [module_lib.register_module_forward_pre_hook(pre),
                         module_lib.register_module_forward_hook(post)]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        if self._depth:  # a norm's forward raised: its post hook never ran
            self._depth = 0
            self._mode.__exit__(None, None, None)


def _constant(x, grad_operand: torch.Tensor) -> float | None:
    """``x``'s value as one number when it is a constant offset for ``grad_operand``; ``None`` otherwise."""
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return float(x) if math.isfinite(x) else None
    if not isinstance(x, torch.Tensor) or x.requires_grad or x.device.type == "meta" or x.is_complex():
        return None
    if x.numel() == 0 or x.numel() > grad_operand.numel() or x.dtype is torch.bool:
        return None
    flat = x.detach().reshape(-1)
    first = float(flat[0])
    return first if math.isfinite(first) and bool((flat == flat[0]).all()) else None


def offset_scales(graph: Graph, gammas: dict[str, torch.Tensor], constants: dict[int, float]) -> dict[str, float]:
    """``{γ name: c}`` for the γ (``{name: parameter}`` as the recorded model holds them) applied as ``c + w``.

    The parameter's every use in the graph is an addition of the constant ``c`` (``constants``, from
    :class:`ConstantAdditions`), through casts and views; each sum reaches a multiply or a native norm op through
    casts and views only. ``c = 0`` is a plain γ (``w + 0``), not an offset.
    """
    if not constants:
        return {}
    leaves = {id(v): node for node, v in graph.leaf_var.items()}
    out = {}
    for name, param in gammas.items():
        leaf = leaves.get(id(param))
        c = _offset(graph, leaf, constants) if leaf is not None else None
        if c is not None and c != 0:
            out[name] = c
    return out


def _offset(graph: Graph, leaf, constants: dict[int, float]) -> float | None:
    found: set[float] = set()
    sums = []
    frontier, seen = [(leaf, _HOPS)], set()
    while frontier:
        node, hops = frontier.pop()
        for user in graph.consumers.get(node, ()):
            if user in seen:
                continue
            seen.add(user)
            c = constants.get(graph.seq.get(user, -1))
            if c is not None and op_name(user) == "Add":
                found.add(c)
                sums.append(user)
            elif op_name(user) in _CASTS_AND_VIEWS and hops > 0:
                frontier.append((user, hops - 1))
            else:
                return None  # a use of the parameter that is not through the addition of a constant
    if len(found) != 1 or not all(_reaches_scale(graph, s) for s in sums):
        return None
    return found.pop()


def _reaches_scale(graph: Graph, node) -> bool:
    """Whether every use of ``node`` (through casts and views) is a multiply or a native norm op."""
    frontier, reached = [(node, _HOPS)], False
    while frontier:
        n, hops = frontier.pop()
        for user in graph.consumers.get(n, ()):
            op = op_name(user)
            if op in _SCALES or _is_native_norm(user):
                reached = True
            elif op in _CASTS_AND_VIEWS and hops > 0:
                frontier.append((user, hops - 1))
            else:
                return False
    return reached


def _is_native_norm(node) -> bool:
    return bool(NATIVE_NORM_RE.search(type(node).__name__))
