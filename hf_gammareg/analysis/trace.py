"""The recorded forward pass: a meta-device copy of the model, module hooks that stamp every module call
with its span of autograd sequence numbers, and a dispatch mode that makes meta forwards run (and run fast)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import math
import types
import weakref
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from ..roles import GammaAnalysisError
from .norms import is_candidate
from .offsets import ConstantAdditions


def _call(model: nn.Module, inputs):
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (list, tuple)):
        return model(*inputs)
    return model(inputs)


def _output_tensor(output) -> tuple[str, torch.Tensor]:
    """The tensor that stands for "the loss": ``loss`` if computed, else the first output tensor, looking
    into nested tuples (a backbone's ``feature_maps``) when the top level holds none."""
    if isinstance(output, torch.Tensor):
        return "output", output
    if isinstance(output, Mapping) and isinstance(output.get("loss"), torch.Tensor):
        return "loss", output["loss"]
    found = _first_tensor(output, "output" if not isinstance(output, Mapping) else "")
    if found is not None:
        return found
    raise GammaAnalysisError(
        f"the model's forward returned {type(output).__name__} with no tensor in it; pass inputs whose "
        "output is a tensor, a tuple starting with one, or a ModelOutput"
    )


def _first_tensor(obj, path: str, depth: int = 3, wanted=lambda t: True):
    if isinstance(obj, torch.Tensor):
        return (path or "output", obj) if wanted(obj) else None
    if depth == 0:
        return None
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if isinstance(value, torch.Tensor) and wanted(value):
                return (f"{path}.{key}" if path else str(key)), value
        items = [(f"{path}.{k}" if path else str(k), v) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple)):
        for k, value in enumerate(obj):
            if isinstance(value, torch.Tensor) and wanted(value):
                return f"{path}[{k}]", value
        items = [(f"{path}[{k}]", v) for k, v in enumerate(obj)]
    else:
        return None
    for sub_path, value in items:
        found = _first_tensor(value, sub_path, depth - 1, wanted)
        if found is not None:
            return found
    return None


def meta_copy(model: nn.Module, repointed: list | None = None) -> nn.Module:
    """A structural copy of ``model`` whose parameters and buffers live on ``meta`` (no data copied).

    The deepcopy memo is pre-filled with meta stand-ins, so tied parameters stay tied and names stay
    the same, while no real tensor data is ever duplicated. A DeepSpeed ZeRO-3 parameter is an empty
    placeholder whose real shape is ``ds_shape``; its meta stand-in gets that shape.

    A ``forward`` set on a module instance is rebound to the copy by deepcopy when it is a bound method or
    a callable object, but a function is shared as it is, closure included: a patch that closes over the
    original forward (TRL's ``SFTTrainer``) would run the original model. Such closures are rebuilt
    pointing at the copy; ``repointed`` gets a `PatchedForward` for each.
    """
    def on_meta(t: torch.Tensor) -> torch.Tensor:
        shape = getattr(t, "ds_shape", None)
        return (torch.empty(shape, dtype=t.dtype, device="meta") if shape is not None
                else torch.empty_like(t, device="meta"))

    return copy_with(model, on_meta, repointed)


def full_numel(t: torch.Tensor) -> int:
    """Elements of ``t`` as the model defines it: a DeepSpeed ZeRO-3 placeholder's real shape (``ds_shape``)."""
    shape = getattr(t, "ds_shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else t.numel()


def copy_with(model: nn.Module, make, repointed: list | None) -> nn.Module:
    """``model`` deep-copied with each parameter and buffer replaced by ``make(tensor)`` (the memo keeps ties)."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(make(p), requires_grad=True)
    for b in model.buffers():
        memo[id(b)] = make(b)
    copied = copy.deepcopy(model, memo)
    for name, module in copied.named_modules():
        forward = module.__dict__.get("forward")
        if forward is None:
            continue
        rebuilt = _point_at_copy(forward, memo, depth=4)
        if rebuilt is not forward:
            module.forward = rebuilt
            if repointed is not None:
                repointed.append(PatchedForward(name, type(module).__name__, _describe_callable(forward)))
    return copied


@dataclasses.dataclass(frozen=True)
class PatchedForward:
    """A module whose ``forward`` is set on the instance, as the analysis met it."""

    module: str  # its name in the model ("" for the model itself)
    cls: str  # its class
    patch: str  # where what it holds was defined: "`trl.trainer.utils.add_fused_lm_head.<locals>._fused_forward`"

    def __str__(self) -> str:
        return f"{self.cls}.forward{f' (`{self.module}`)' if self.module else ''} is replaced on the instance by " \
               f"{self.patch}"


def instance_forwards(model: nn.Module) -> list[PatchedForward]:
    """Every module of ``model`` whose ``forward`` is set on the instance rather than by its class."""
    return [PatchedForward(name, type(m).__name__, _describe_callable(m.__dict__["forward"]))
            for name, m in model.named_modules() if "forward" in m.__dict__]


def use_class_forwards(model: nn.Module) -> None:
    """Drop every ``forward`` set on a module instance of ``model`` (a copy): its class's own forward runs."""
    for module in model.modules():
        module.__dict__.pop("forward", None)


def _describe_callable(fn) -> str:
    """Where a callable was defined: for a function, read from its code and globals, since ``functools.wraps``
    gives a wrapper the wrapped forward's ``__qualname__`` (TRL's ``_fused_forward`` calls itself
    ``GPT2LMHeadModel.forward``)."""
    fn = getattr(fn, "__func__", fn)
    if isinstance(fn, types.FunctionType):
        code = fn.__code__
        name = getattr(code, "co_qualname", code.co_name)  # co_qualname: Python 3.11+
        module = fn.__globals__.get("__name__")
    else:
        name, module = type(fn).__qualname__ + " object", type(fn).__module__
    return f"`{module}.{name}`" if module else f"`{name}`"


def _point_at_copy(value, memo: dict, depth: int):
    """``value`` with the original model's objects it closes over replaced by their copies in ``memo``.

    Deepcopy copies objects but shares functions, so a closure's cells still hold the original model's bound
    methods and modules. Functions (and bound methods of them) are rebuilt, ``depth`` closures deep, only where
    a cell holds something ``memo`` copied; everything else in the cells is shared, as deepcopy shares it.
    """
    copied = memo.get(id(value))
    if copied is not None and copied is not value:
        return copied
    if isinstance(value, types.MethodType):
        owner = memo.get(id(value.__self__), value.__self__)
        func = _point_at_copy(value.__func__, memo, depth)
        if owner is value.__self__ and func is value.__func__:
            return value
        return types.MethodType(func, owner)
    if not isinstance(value, types.FunctionType) or not value.__closure__ or depth == 0:
        return value
    cells = []
    changed = False
    for cell in value.__closure__:
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            cells.append(cell)
            continue
        new = _point_at_copy(content, memo, depth - 1)
        changed |= new is not content
        cells.append(types.CellType(new) if new is not content else cell)
    if not changed:
        return value
    rebuilt = types.FunctionType(value.__code__, value.__globals__, value.__name__, value.__defaults__, tuple(cells))
    rebuilt.__kwdefaults__ = value.__kwdefaults__
    rebuilt.__dict__.update(value.__dict__)  # functools.wraps' __wrapped__, __doc__ lives on the code's consts
    rebuilt.__qualname__, rebuilt.__module__, rebuilt.__doc__ = value.__qualname__, value.__module__, value.__doc__
    return rebuilt


class ForeignForward(RuntimeError):
    """The recorded forward of a copy reached the original model (one of its modules was called, or one of its
    real tensors met an op): something the copy runs still holds a reference to the original."""


class _OriginalGuard:
    """Stops a copy's recorded forward at its first touch of the original model, before the original computes
    anything: the pre-hook of one of its modules, or an op one of its real tensors reaches (`_GuardedMetaForward`).
    ``reached`` keeps the first, so a forward that catches the exception still fails."""

    def __init__(self, original: nn.Module):
        self.modules = {id(m): n for n, m in original.named_modules()}
        self.storages = {_storage_key(t): n for n, t in itertools.chain(original.named_parameters(),
                                                                        original.named_buffers())
                         if t.device.type != "meta"}
        self.reached: str | None = None

    def stop(self, what: str) -> ForeignForward:
        self.reached = self.reached or what
        return ForeignForward(self.reached)


@dataclasses.dataclass(frozen=True)
class ModuleCall:
    """One module call of the recorded forward: the autograd sequence numbers its nodes took, ``[start, end)``."""

    name: str  # the module's name in the model
    start: int
    end: int
    candidate: bool  # a module that may be a norm (it owns a per-channel scale)
    node: Any  # a candidate's output node (its ``grad_fn``), else None
    grad_enabled: bool  # autograd was on during the call


@dataclasses.dataclass
class Trace:
    """What one recorded forward leaves: the graph's sink and the records needed to read it."""

    sink: Any  # the ``grad_fn`` of the output the dataflow is read from
    sink_name: str  # that output's name (``logits``, ``loss``, ``audio_values``…)
    calls: list[ModuleCall]
    data_seeds: list  # embedding lookups of the integer input data: where it enters the graph
    float_input_ids: set[int]  # ids of the floating-point input tensors (data, not parameters)
    output: Any  # the model's own output
    # The op of each in-place write into a view (`x[:, :k] = v`, `x[..., 0].mul_(2)`), by the autograd sequence
    # number of the `CopySlices` node it leaves, which does not say which op it was.
    view_writes: dict[int, str] = dataclasses.field(default_factory=dict)
    constants: dict[int, float] = dataclasses.field(default_factory=dict)  # {sum's sequence number: c} (offsets.py)


class _Recorder:
    """Hooks every module of a model and records, per call, the span of autograd sequence numbers."""

    def __init__(self, model: nn.Module, data_storages: set[int] = frozenset(), guard: _OriginalGuard | None = None):
        self.model = model
        self._guard = guard
        self.calls: list[ModuleCall] = []
        # Embedding lookups of the input ids: where integer input data enters the graph.
        self.data_seeds: list = []
        self._data_storages = data_storages
        self._stack: list[int] = []
        self._handles = []
        self._views: list = []  # (call index, a norm's output that is a view, its version, its base's node)

    def __enter__(self):
        # Global module hooks: two registrations instead of two per module (per-module handles cost
        # ~60 µs each, a quarter of a second on an 80-layer model).
        from torch.nn.modules import module as module_lib

        names = {id(m): n for n, m in self.model.named_modules()}
        norms = {id(m) for m in self.model.modules() if is_candidate(m)}
        embeddings = ({id(m) for m in self.model.modules() if isinstance(m, nn.Embedding)}
                      if self._data_storages else set())
        seq = torch._C._autograd._get_sequence_nr
        stack = self._stack

        grad_on = torch.is_grad_enabled
        guard = self._guard
        foreign = guard.modules if guard is not None else {}

        def pre(mod, _args):
            if id(mod) in names:
                stack.append((seq(), grad_on()))
            elif id(mod) in foreign:
                raise guard.stop(f"its module `{foreign[id(mod)] or '(the model)'}` ({type(mod).__name__}) was called")

        def post(mod, args, output):
            key = id(mod)
            if key not in names:
                return
            start, grad = stack.pop()
            node = None
            if key in norms:
                tensor = output[0] if isinstance(output, (tuple, list)) and output else output
                node = tensor.grad_fn if isinstance(tensor, torch.Tensor) else None
                if node is not None and tensor._is_view() and tensor._base.numel() == tensor.numel():
                    self._views.append((len(self.calls), tensor, tensor._version, tensor._base.grad_fn))
            elif key in embeddings:
                self._embedding_hook(mod, args, output)
            self.calls.append(ModuleCall(names[key], start, seq(), key in norms, node, grad))

        self._handles.append(module_lib.register_module_forward_pre_hook(pre))
        self._handles.append(module_lib.register_module_forward_hook(post))
        return self

    def _embedding_hook(self, _mod, args, output):
        index = args[0] if args else None
        if (isinstance(index, torch.Tensor) and _storage_key(index) in self._data_storages
                and output.grad_fn is not None):
            self.data_seeds.append(output.grad_fn)

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        # A norm whose output is a view of its result (a channels-first norm's `y.transpose(1, 2)`), written in
        # place later (`out[~mask] = 0`): autograd records the write on the view's base, so what follows the write
        # no longer passes through the view's own node. The version counter, shared by a view and its base, shows
        # the write; the base's node (the same elements) is then where γ's signal starts.
        for k, tensor, version, base_node in self._views:
            if tensor._version != version and base_node is not None:
                self.calls[k] = dataclasses.replace(self.calls[k], node=base_node)
        self._views.clear()



def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


class TemporaryAnalysisState:
    """Puts a model in eval mode with every parameter requiring grad, and undoes it all on exit.

    Also restores buffers (BatchNorm running statistics and the like) and the global RNG state, so
    that the analysis pass leaves no trace on a real model.
    """

    def __init__(self, model: nn.Module, restore_buffers: bool):
        self.model = model
        self.restore_buffers = restore_buffers

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        self.buffers = (
            [(b, b.detach().clone()) for b in self.model.buffers()] if self.restore_buffers else []
        )
        self.rng = torch.random.fork_rng(devices=[], enabled=True)
        self.rng.__enter__()
        self.model.eval()
        for p, _ in self.flags:
            p.requires_grad_(True)
        return self

    def __exit__(self, *exc):
        for m, training in self.modes:
            m.training = training
        for p, flag in self.flags:
            p.requires_grad_(flag)
        with torch.no_grad():
            for b, saved in self.buffers:
                b.copy_(saved)
        self.rng.__exit__(*exc)


_aten = torch.ops.aten
# Pointwise ops whose meta result is a fresh tensor of the broadcast shape and promoted dtype. Meta
# kernels for these run through Python reference implementations (~0.2 ms each); on an 80-layer
# model they would be most of the analysis time.
_FAST_BINARY = {_aten.add.Tensor, _aten.sub.Tensor, _aten.mul.Tensor, _aten.div.Tensor, _aten.add.Scalar,
                _aten.sub.Scalar, _aten.mul.Scalar, _aten.div.Scalar, _aten.pow.Tensor_Scalar}
_FAST_UNARY = {_aten.neg.default, _aten.rsqrt.default, _aten.sqrt.default, _aten.silu.default, _aten.gelu.default,
               _aten.relu.default, _aten.tanh.default, _aten.exp.default, _aten.sigmoid.default, _aten.tril.default,
               _aten.triu.default, _aten._safe_softmax.default, _aten._softmax.default}


def _broadcast(a: torch.Size, b: torch.Size) -> tuple[int, ...]:
    if a == b:
        return a
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise RuntimeError(f"shapes {a} and {b} do not broadcast")
        out.append(y if x == 1 else x)
    return tuple(out)


class _ValueTable:
    """``{meta tensor: value}`` keyed by identity. A weak reference guards against a reused ``id``; a plain
    dict lookup, because this check runs for every op of the forward (torch's WeakIdKeyDictionary builds a
    weak reference per lookup, ~30 µs)."""

    def __init__(self):
        self._entries: dict[int, tuple] = {}

    def __contains__(self, tensor) -> bool:
        entry = self._entries.get(id(tensor))
        return entry is not None and entry[0]() is tensor

    def __getitem__(self, tensor):
        return self._entries[id(tensor)][1]

    def __setitem__(self, tensor, value) -> None:
        self._entries[id(tensor)] = (weakref.ref(tensor), value)


_MAX_TRACKED = 1 << 20  # values of at most this many elements are kept alongside a meta tensor
_IN_PLACE: dict = {}  # op overload -> its name if it writes into its first argument (`copy_`, `index_put_`), else None


def _note_view_write(view_writes: dict[int, str], func, args) -> None:
    """Record ``func`` in ``view_writes`` if it writes in place into a view: by the autograd sequence number current
    while it runs, which the ``CopySlices`` node it leaves on the view's base takes."""
    name = _IN_PLACE.get(func, False)
    if name is False:
        schema = getattr(getattr(func, "_schema", None), "arguments", None)  # none on a higher-order op
        writes = bool(schema) and schema[0].alias_info is not None and schema[0].alias_info.is_write
        name = _IN_PLACE[func] = func.overloadpacket.__name__ if writes else None
    if name is not None and isinstance(args[0], torch.Tensor) and args[0]._is_view():
        view_writes[torch._C._autograd._get_sequence_nr()] = name


# Integer ids shifted by a constant or an offset table (Dia's `audio_codes + offsets`, one table for every codebook)
# are still the input's ids: an embedding lookup of them is where the data enters, as a lookup of the ids themselves.
_ID_SHIFTS = {_aten.add.Tensor, _aten.add.Scalar, _aten.sub.Tensor, _aten.sub.Scalar}


def _note_shifted_ids(data_storages: set | None, kept: list, func, args, out) -> None:
    """Count ``out`` as input data if ``func`` shifts integer input ids (`_ID_SHIFTS`): a comparison, a cumulative
    sum or a product (the positions computed from a padding mask) is not a shift and stays bookkeeping. ``kept``
    holds ``out`` for the pass, so that its storage's key is not reused by a later tensor."""
    if (data_storages and func in _ID_SHIFTS and isinstance(out, torch.Tensor) and not out.is_floating_point()
            and out.dtype is not torch.bool
            and any(isinstance(a, torch.Tensor) and _storage_key(a) in data_storages for a in args[:2])):
        data_storages.add(_storage_key(out))
        kept.append(out)


class _ViewWrites(TorchDispatchMode):
    """Off ``meta``, only records the in-place writes into views (``_MetaForward`` does it on ``meta``) and the
    shifted input ids (`_note_shifted_ids`)."""

    supports_higher_order_operators = True  # flex attention and the like pass through untouched

    def __init__(self, data_storages: set | None = None):
        super().__init__()
        self.view_writes: dict[int, str] = {}
        self.data_storages = data_storages
        self.shifted_ids: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if args:
            _note_view_write(self.view_writes, func, args)
        out = func(*args, **(kwargs or {}))
        _note_shifted_ids(self.data_storages, self.shifted_ids, func, args, out)
        return out


def _is_meta(x) -> bool:
    return isinstance(x, torch.Tensor) and x.device.type == "meta"


class _MetaForward(TorchDispatchMode):
    """Makes a forward pass on the ``meta`` device run, and run fast.

    * **Known values.** Integer and boolean bookkeeping — the dummy input ids, a vision tower's
      ``grid_thw``, the positions, masks and sequence offsets computed from them — is computed for
      real on the CPU, next to its meta tensor, whenever every meta operand of an op has a known
      value (and for small ``arange``/``zeros``/``ones``/``full`` created on meta). So ``.tolist()``,
      ``.item()``, ``repeat_interleave`` and ``nonzero`` on them give the true answer, and code that
      sizes tensors from the input grid (Qwen2-VL-style vision towers) runs on meta. Floating-point
      activations never get values: they are shapes only.
    * Answers ``.item()``/``bool()`` on a meta tensor without a known value with 1/True. Workaround
      for data-dependent checks in model code, e.g. transformers' ``masking_utils`` asks
      ``padding_mask.all()`` to decide whether a mask can be skipped. Our dummy masks are all ones,
      so "true" is the honest answer, and the graph's shape does not depend on it. It can go once HF
      guards those checks for meta tensors as it does for FakeTensors (``is_tracing``).
    * Computes the result metadata of common pointwise ops directly (see ``_FAST_BINARY``). Autograd
      sits above this mode, so the recorded graph is the same; only the result's strides may be
      contiguous where the real op would have kept an input's layout.
    * Records the op of every in-place write into a view (``view_writes``): autograd's ``CopySlices`` node
      for ``x[:, :k] = v`` or ``x[..., 0].tanh_()`` does not say which op wrote, and the dataflow reading
      needs to know (a copy keeps the scale of what it writes, ``tanh_`` does not). The node takes the
      sequence number current while the op runs.
    """

    def __init__(self, data_storages: set | None = None):
        super().__init__()
        self.values = _ValueTable()  # meta tensor -> its CPU value
        self.view_writes: dict[int, str] = {}
        self.data_storages = data_storages  # the input ids' storages, which shifted ids join (`_note_shifted_ids`)
        self.shifted_ids: list = []

    def track(self, meta: torch.Tensor, value: torch.Tensor) -> None:
        if value.numel() <= _MAX_TRACKED:
            self.values[meta] = value

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        first = args[0] if args else None
        if args:
            _note_view_write(self.view_writes, func, args)
        if _is_meta(first) and first not in self.values:
            # The common case: an activation, shapes only. No operand list to build, no value to compute.
            if func in _FAST_BINARY:
                other = args[1]
                if not (_is_meta(other) and other in self.values):
                    shape = _broadcast(first.shape, other.shape) if isinstance(other, torch.Tensor) else first.shape
                    dtype = torch.result_type(first, other)
                    if func in (_aten.div.Tensor, _aten.div.Scalar) and not dtype.is_floating_point:
                        return func(*args, **kwargs)  # true division of integers: leave to torch
                    return torch.empty(shape, dtype=dtype, device="meta")
            elif (func in _FAST_UNARY and first.is_floating_point() and not kwargs
                    and all(a is None or a is False or isinstance(a, int) for a in args[1:])):
                return torch.empty(first.shape, dtype=first.dtype, device="meta")
            elif func is _aten._local_scalar_dense.default:
                return True if first.dtype is torch.bool else (1.0 if first.is_floating_point() else 1)
            elif func is _aten.repeat_interleave.self_Tensor:
                return self._repeat_interleave(func, args, kwargs)
            return func(*args, **kwargs)
        known = self._with_values(func, args, kwargs)
        if known is not None:
            _note_shifted_ids(self.data_storages, self.shifted_ids, func, args, known)
            return known
        if func in _REPEAT_INTERLEAVE:
            return self._repeat_interleave(func, args, kwargs)
        out = func(*args, **kwargs)
        _note_shifted_ids(self.data_storages, self.shifted_ids, func, args, out)
        return out

    def _repeat_interleave(self, func, args, kwargs):
        """``repeat_interleave`` with known repeats: its output size is their sum, so meta can make it."""
        repeats = args[1] if func is _aten.repeat_interleave.self_Tensor else args[0]
        if kwargs.get("output_size") is None and _is_meta(repeats) and repeats in self.values:
            value = self.values[repeats]
            if func is _aten.repeat_interleave.self_Tensor and value.numel() == 1 and _is_meta(args[0]):
                dim = args[2] if len(args) > 2 else kwargs.get("dim")
                base = args[0].numel() if dim is None else args[0].shape[dim]
                size = int(value.item()) * base
            else:
                size = int(value.sum())
            return func(*args, **{**kwargs, "output_size": size})
        return func(*args, **kwargs)

    def _with_values(self, func, args, kwargs):
        """Run ``func`` on the CPU values when every meta operand has one; ``None`` otherwise."""
        if func is _aten._to_copy.default and isinstance(args[0], torch.Tensor) and args[0].device.type == "cpu" \
                and _is_meta_device(kwargs.get("device")):
            # torch.tensor(values, device="meta"): the values are right here
            out = func(*args, **kwargs)
            self.track(out, args[0].to(dtype=kwargs.get("dtype") or args[0].dtype).clone())
            return out
        flat, spec = tree_flatten((args, kwargs))
        metas = [x for x in flat if _is_meta(x)]
        if metas:
            if not all(x in self.values for x in metas):
                return None
        elif not (func in _FACTORIES and _is_meta_device(kwargs.get("device"))):
            return None
        if _value_size_bound(func, args, metas) > _MAX_TRACKED:
            return None  # a big mask or grid (a long sequence, a high-resolution image): shapes only, no values
        cpu = [self.values[x] if _is_meta(x) else x for x in flat]
        cpu_args, cpu_kwargs = tree_unflatten(cpu, spec)
        if "device" in cpu_kwargs and _is_meta_device(cpu_kwargs["device"]):
            cpu_kwargs["device"] = torch.device("cpu")
        try:
            out = func(*cpu_args, **cpu_kwargs)
        except Exception:  # the CPU kernel wants something meta did not: leave the op to meta
            return None
        if func is _aten._to_copy.default and not _is_meta_device(kwargs.get("device", first_device(args))):
            return out  # a copy off meta: the value itself
        if not isinstance(out, (torch.Tensor, list, tuple)):
            return out  # a Python scalar (.item())
        by_value = {id(self.values[x]): x for x in metas}
        if getattr(func, "is_view", False):
            # A view must stay a view of its meta base (a reshaped `input_ids` is still the input's storage,
            # which is how the analysis sees where data enters); other results are fresh tensors anyway, and
            # running their meta kernels too (often Python references) would cost more than the value.
            try:
                meta_out = func(*args, **kwargs)
            except Exception:  # a data-dependent size: build it from the value
                meta_out = None
            if meta_out is not None:
                metas_out, _ = tree_flatten(meta_out)
                values_out, _ = tree_flatten(out)
                for m, v in zip(metas_out, values_out):
                    if _is_meta(m) and isinstance(v, torch.Tensor) and m not in self.values:
                        self.track(m, v)
                return meta_out

        def twin(value):
            if not isinstance(value, torch.Tensor):
                return value
            if id(value) in by_value:  # an in-place op returns its (meta) input
                return by_value[id(value)]
            meta = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
            self.track(meta, value)
            return meta

        return tree_map(twin, out)


class _GuardedMetaForward(_MetaForward):
    """`_MetaForward` for a copy of a real model: an op on one of the original's real tensors is refused."""

    def __init__(self, guard: _OriginalGuard, data_storages: set | None = None):
        super().__init__(data_storages)
        self.guard = guard

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for arg in args:
            if isinstance(arg, torch.Tensor):
                if not arg.is_meta:
                    self._check(func, arg)
            elif isinstance(arg, (list, tuple)):  # torch.cat's tensors
                for tensor in arg:
                    if isinstance(tensor, torch.Tensor) and not tensor.is_meta:
                        self._check(func, tensor)
        return super().__torch_dispatch__(func, types, args, kwargs)

    def _check(self, func, tensor: torch.Tensor) -> None:
        name = self.guard.storages.get(_storage_key(tensor))
        if name is not None:
            raise self.guard.stop(f"its tensor `{name}` met {func}")


def _value_size_bound(func, args, metas) -> int:
    """Elements of the value an op would compute: a factory's requested size, else the broadcast of its operands
    (elementwise ops; reductions and indexing make less). Computing a value costs real memory and time, so one
    past ``_MAX_TRACKED`` is not computed (``repeat``-like ops that grow beyond their operands are rare here)."""
    if not metas:
        size = args[0] if args and isinstance(args[0], (list, tuple, torch.Size)) else None
        if func in (_aten.arange.default, _aten.arange.start, _aten.arange.start_step):
            numbers = [a for a in args if isinstance(a, (int, float))]
            if len(numbers) == 1:
                return int(abs(numbers[0]))
            if len(numbers) >= 2:
                step = numbers[2] if len(numbers) > 2 else 1
                return int(abs((numbers[1] - numbers[0]) / (step or 1)))
            return 0
        return math.prod(int(d) for d in size) if size is not None else 1
    shape: tuple = ()
    for tensor in metas:
        try:
            shape = _broadcast(shape, tensor.shape)
        except RuntimeError:  # not broadcastable (cat, matmul…): bound by the sum of the operands
            return sum(t.numel() for t in metas)
    return math.prod(shape)


def first_device(args):
    first = args[0] if args else None
    return first.device if isinstance(first, torch.Tensor) else None


def _is_meta_device(device) -> bool:
    return device is not None and torch.device(device).type == "meta"


_REPEAT_INTERLEAVE = {_aten.repeat_interleave.Tensor, _aten.repeat_interleave.self_Tensor}
_FACTORIES = {_aten.arange.default, _aten.arange.start, _aten.arange.start_step, _aten.zeros.default,
              _aten.ones.default, _aten.full.default, _aten.scalar_tensor.default}


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


def _prepare_inputs(obj, device, storages: set[int], float_ids: set[int], values: list | None = None):
    """Move inputs to ``device``. A float tensor becomes a leaf that requires grad, passed on through a
    clone: the clone is a computed node, so the input counts as a signal where it meets an addition
    (a raw input can be the residual stream), and it marks where data enters the graph. Integer
    tensors are remembered by storage (embedding lookups of them are data), and, when they move onto
    meta, by value (``values`` gets ``(meta tensor, value)`` pairs)."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            leaf = obj.detach().to(device).requires_grad_(True)
            float_ids.add(id(leaf))
            return leaf.clone()
        moved = obj.to(device)
        storages.add(_storage_key(moved))
        if values is not None and moved.device.type == "meta" and obj.device.type != "meta":
            values.append((moved, obj))
        return moved
    if isinstance(obj, Mapping):
        return {k: _prepare_inputs(v, device, storages, float_ids, values) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_prepare_inputs(v, device, storages, float_ids, values) for v in obj)
    return obj


@contextlib.contextmanager
def _single_thread():
    """One intra-op thread while a meta pass computes its small integer values on the CPU: each op is a few
    elements, and a parallel region on a busy machine waits for its threads to be scheduled (measured: 16 ms
    for an 8×8 ``tril`` on 2 loaded cores, 10 µs on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _meta_friendly(model: nn.Module):
    """Settings under which data-dependent code paths run on ``meta``, restored on exit.

    * Mixture-of-experts layers built with transformers' ``@use_experts_implementation`` default to
      ``torch._grouped_mm``, whose meta kernel accepts bf16 only; ``batched_mm`` computes the same
      dataflow (each token's hidden state through its experts' weights, then the weighted sum) with
      gathers and ``bmm``, which meta runs in any dtype.
    * ``torch.nonzero`` has no meta kernel (its output size depends on the data); torch can answer as
      if every element were non-zero, which routes every token everywhere — the same graph structure
      (Longformer's global attention, Switch Transformers' expert loops).
    """
    saved = []
    for module in model.modules():
        config = getattr(module, "config", None)
        if hasattr(module, "_is_expert_parallel") and hasattr(config, "_experts_implementation_internal"):
            if config._experts_implementation_internal != "batched_mm":
                saved.append((config, config._experts_implementation_internal))
                config._experts_implementation_internal = "batched_mm"
    # torch.tensor(data, device="meta") fills the meta tensor below the dispatcher, so its values are
    # lost; built on the CPU and moved, they reach _MetaForward and are kept (vision towers build their
    # merge sizes and grids this way).
    tensor, as_tensor = torch.tensor, torch.as_tensor

    def scalars(data):
        # A list of 0-d meta tensors (lengths looped over in Python): torch.tensor reads each below the dispatcher,
        # where meta has no value; read through it, each is its known value (or 1, as for any .item() on meta).
        if isinstance(data, (list, tuple)):
            return type(data)(scalars(x) for x in data)
        if isinstance(data, torch.Tensor) and data.device.type == "meta" and data.numel() == 1:
            return data.item()
        return data

    def on_cpu_then_meta(factory):
        def make(data, *args, device=None, **kwargs):
            if device is not None and torch.device(device).type == "meta" and not kwargs.get("requires_grad"):
                return factory(scalars(data), *args, **kwargs).to("meta")
            return factory(data, *args, device=device, **kwargs)
        return make

    torch.tensor, torch.as_tensor = on_cpu_then_meta(tensor), on_cpu_then_meta(as_tensor)
    try:
        from torch.fx.experimental import _config as fx_config

        nonzero = fx_config.patch(meta_nonzero_assume_all_nonzero=True)
    except (ImportError, AttributeError):  # pragma: no cover - older torch
        nonzero = contextlib.nullcontext()
    try:
        with nonzero:
            yield
    finally:
        torch.tensor, torch.as_tensor = tensor, as_tensor
        for config, value in saved:
            config._experts_implementation_internal = value


def record_forward(model: nn.Module, inputs, device, original: nn.Module | None = None) -> Trace:
    """Run one forward of ``model`` on ``inputs`` (on ``device``) with every module call recorded.

    ``original``: the real model ``model`` is a meta copy of. The forward raises `ForeignForward` at its first
    touch of it (a module called, a real tensor in an op), before the original computes anything.
    """
    meta = torch.device(device).type == "meta"
    guard = _OriginalGuard(original) if original is not None and meta else None
    storages: set[int] = set()
    float_ids: set[int] = set()
    values: list = []
    inputs = _prepare_inputs(inputs, device, storages, float_ids, values)
    with contextlib.ExitStack() as stack:
        if meta:
            stack.enter_context(_meta_friendly(model))
            stack.enter_context(_single_thread())
        rec = stack.enter_context(_Recorder(model, storages, guard))
        additions = stack.enter_context(ConstantAdditions(model))
        stack.enter_context(torch.enable_grad())
        if meta:
            mode = stack.enter_context(_MetaForward(storages) if guard is None
                                       else _GuardedMetaForward(guard, storages))
            for tensor, value in values:
                mode.track(tensor, value)
        else:
            mode = stack.enter_context(_ViewWrites(storages))
        try:
            output = _call(model, inputs)
        except Exception as exc:
            if guard is not None and guard.reached and not isinstance(exc, ForeignForward):
                raise ForeignForward(guard.reached) from exc  # the model's own error came after the touch
            raise
    if guard is not None and guard.reached:
        raise ForeignForward(guard.reached)  # the forward caught it and went on
    sink_name, out = _output_tensor(output)
    if out.grad_fn is None:
        # The first output is not differentiable (a codec's integer `audio_codes`): the dataflow is read from
        # the first output that carries a gradient (its decoded `audio_values`).
        found = _first_tensor(output, "output" if not isinstance(output, Mapping) else "",
                              wanted=lambda t: t.grad_fn is not None)
        if found is not None:
            sink_name, out = found
    if out.grad_fn is None:
        raise GammaAnalysisError(
            f"the model output `{sink_name}` does not depend on any parameter (no autograd graph); "
            "is the forward wrapped in torch.no_grad or are all parameters detached?"
        )
    return Trace(sink=out.grad_fn, sink_name=sink_name, calls=rec.calls, data_seeds=rec.data_seeds,
                 float_input_ids=float_ids, output=output, view_writes=mode.view_writes,
                 constants=additions.found)

