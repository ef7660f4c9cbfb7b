"""Dataflow analysis: which role each normalization scale γ plays (``../DESIGN.md`` § Roles).

One forward pass records the autograd graph; the analysis then follows the signal that leaves each
γ forward through it. Module names are used only to find candidate norm layers and to write
readable reasons; the roles come from the graph.

The mechanics, in one place:

* A forward hook on every module probes the global autograd sequence counter when the module is
  entered and left. Every autograd node created in between belongs to that module call, so a norm
  call's nodes form a ``[start, end)`` interval of sequence numbers. A signal that reaches a node in
  such an interval has entered that normalization and stops there ("renormalized").
* Sequence numbers grow in forward order, so a node's inputs always have smaller numbers than the
  node. Propagation visits nodes in that order (a heap), which makes each node's state final when it
  is read, and lets ancestor searches stop early.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import heapq
import inspect
import json
import logging
import re
import sys
import warnings
from collections import defaultdict
from typing import Any, Iterable, Mapping

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

logger = logging.getLogger(__name__)

ROLES = ("branch", "invariant", "stream", "head")
INVARIANCE_MODES = ("exact", "approximate")

_TORCH_NORM_TYPES: tuple[type, ...] = (
    nn.modules.batchnorm._BatchNorm,  # BatchNorm1d/2d/3d and SyncBatchNorm
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())

# Autograd node names (without the ``Backward<N>`` suffix) of ops that are positively homogeneous
# in the γ-carrying operand: f(a·x) = a·f(x) for a > 0, other operands held fixed. Linear layers with
# a bias are affine, not homogeneous; DESIGN.md counts them as homogeneous (the bias is a parameter,
# not a signal), and so do we. Anything not listed is treated as non-homogeneous in ``exact`` mode.
_HOMOGENEOUS_OPS = frozenset(
    """Add Sub Mul Div Neg Addmm Mm Bmm Mv Matmul Linear Baddbmm Addbmm Addmv Convolution
    ConvolutionBackwardOverrideable SlowConv2D ConvDepthwise2D MkldnnConvolution Relu Threshold
    LeakyRelu Prelu PreluKernel MaxPool1DWithIndices MaxPool2DWithIndices MaxPool3DWithIndices
    AvgPool1D AvgPool2D AvgPool3D AdaptiveAvgPool1D AdaptiveAvgPool2D AdaptiveAvgPool3D
    AdaptiveMaxPool1D AdaptiveMaxPool2D AdaptiveMaxPool3D Mean Sum View UnsafeView Reshape
    ReshapeAlias T Transpose Permute Expand Slice Select Index IndexSelect Gather Clone Unsqueeze
    Squeeze SqueezeDim AsStrided ToCopy Cat Stack Split SplitWithSizes Unbind UnsafeSplit
    UnsafeSplitWithSizes NativeDropout Dropout MaskedFill Flip Roll Repeat Alias Unfold Im2Col
    ConstantPadNd Narrow Tril Triu Flatten Contiguous Lift Clamp""".split()
)
# "Parametrized matrix op": one of these with a parameter (possibly through a view) as operand.
_MATRIX_OPS = frozenset(
    """Addmm Mm Bmm Mv Matmul Linear Baddbmm Addbmm Addmv Convolution ConvolutionBackwardOverrideable
    SlowConv2D ConvDepthwise2D MkldnnConvolution""".split()
)
_VIEW_OPS = frozenset("T Transpose Permute View Expand Reshape ReshapeAlias ToCopy Clone Unsqueeze Alias".split())
_NATIVE_NORM_RE = re.compile(r"(LayerNorm|BatchNorm|GroupNorm|RmsNorm|RMSNorm|InstanceNorm)")
_ADDITIONS = frozenset(("Add", "Sub"))


class GammaAnalysisError(RuntimeError):
    """The model's forward pass could not be run or read for γ classification."""


# --------------------------------------------------------------------------------------------------
# Norm discovery
# --------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class GammaReport:
    """The role of every γ of a model, with a one-line reason each.

    Attributes:
        roles: ``{parameter name: role}``, names exactly as ``model.named_parameters()`` gives them,
            roles in ``ROLES``. Only γ that take part in the forward pass have a role.
        reasons: ``{parameter name: one-line explanation}``.
        norm_types: ``{parameter name: class name of the norm module}``.
        numel: ``{parameter name: number of elements}``.
        unused: γ that did not take part in the forward pass (no role; decayed as HF would).
        hf_default: γ names that ``transformers.Trainer`` decays today (its name/type rule).
        invariance: the invariance mode used (``exact`` or ``approximate``).
        model_class: class name of the analysed model.
        device: where the analysis pass ran (``meta`` or the model's device).
    """

    roles: dict[str, str]
    reasons: dict[str, str]
    norm_types: dict[str, str]
    numel: dict[str, int] = dataclasses.field(default_factory=dict)
    unused: list[str] = dataclasses.field(default_factory=list)
    hf_default: list[str] = dataclasses.field(default_factory=list)
    invariance: str = "exact"
    model_class: str = ""
    device: str = "meta"

    @property
    def gammas(self) -> list[str]:
        """All γ names, classified and unused."""
        return list(self.roles) + list(self.unused)

    def decay_names(
        self, policy: str = "guidelines", *, include: Iterable[str] = (), exclude: Iterable[str] = ()
    ) -> set[str]:
        """The γ names that ``policy`` decays (see :func:`hf_gammareg.policy.select_decayed`)."""
        from .policy import select_decayed

        return select_decayed(self, policy, include=include, exclude=exclude)

    def counts(self) -> dict[str, tuple[int, int]]:
        """``{role: (number of γ, total numel)}`` including ``unused``."""
        out: dict[str, tuple[int, int]] = {}
        for name, role in list(self.roles.items()) + [(n, "unused") for n in self.unused]:
            count, numel = out.get(role, (0, 0))
            out[role] = (count + 1, numel + self.numel.get(name, 0))
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "GammaReport":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("GammaReport JSON must be an object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"GammaReport JSON has unknown fields {sorted(unknown)}")
        report = cls(**data)
        bad = {n: r for n, r in report.roles.items() if r not in ROLES}
        if bad:
            raise ValueError(f"GammaReport JSON has roles outside {ROLES}: {bad}")
        return report

    def to_table(self, policy: str = "guidelines", *, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> str:
        """Plain-text table, one row per γ: name, norm type, role, decay yes/no, reason."""
        decayed = self.decay_names(policy, include=include, exclude=exclude)
        rows = [("parameter", "norm", "role", "decay", "reason")]
        for name in self.gammas:
            role = self.roles.get(name, "unused")
            reason = self.reasons.get(name, "does not take part in the forward pass")
            rows.append((name, self.norm_types.get(name, "?"), role, "yes" if name in decayed else "no", reason))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 6)
        return "\n".join(lines)

    def summary(self, policy: str = "guidelines", *, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> str:
        """One line: counts and numel per role and how many γ the policy decays."""
        decayed = self.decay_names(policy, include=include, exclude=exclude)
        parts = [f"{role}: {c} ({n:,} values)" for role, (c, n) in sorted(self.counts().items())]
        numel = sum(self.numel.get(n, 0) for n in decayed)
        return (
            f"{len(self.gammas)} γ in {self.model_class or 'model'} [{', '.join(parts)}]; "
            f"policy {policy!r} decays {len(decayed)} ({numel:,} values)"
        )


# --------------------------------------------------------------------------------------------------
# Dummy inputs and the recorded forward pass
# --------------------------------------------------------------------------------------------------
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


def _call(model: nn.Module, inputs):
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (list, tuple)):
        return model(*inputs)
    return model(inputs)


def _output_tensor(output) -> tuple[str, torch.Tensor]:
    """The tensor that stands for "the loss": ``loss`` if computed, else the first output."""
    if isinstance(output, torch.Tensor):
        return "output", output
    if isinstance(output, Mapping):
        if isinstance(output.get("loss"), torch.Tensor):
            return "loss", output["loss"]
        for key, value in output.items():
            if isinstance(value, torch.Tensor):
                return key, value
    if isinstance(output, (list, tuple)):
        for value in output:
            if isinstance(value, torch.Tensor):
                return "output[0]", value
    raise GammaAnalysisError(
        f"the model's forward returned {type(output).__name__} with no tensor in it; pass inputs whose "
        "output is a tensor, a tuple starting with one, or a ModelOutput"
    )


def _meta_copy(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` whose parameters and buffers live on ``meta`` (no data copied).

    The deepcopy memo is pre-filled with meta stand-ins, so tied parameters stay tied and names stay
    the same, while no real tensor data is ever duplicated. A DeepSpeed ZeRO-3 parameter is an empty
    placeholder whose real shape is ``ds_shape``; its meta stand-in gets that shape.
    """
    memo: dict[int, Any] = {}
    for p in model.parameters():
        shape = getattr(p, "ds_shape", None)
        meta = torch.empty(shape, dtype=p.dtype, device="meta") if shape is not None else torch.empty_like(p, device="meta")
        memo[id(p)] = nn.Parameter(meta, requires_grad=True)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


class _Recorder:
    """Hooks every module of a model and records, per call, the span of autograd sequence numbers."""

    def __init__(self, model: nn.Module, data_storages: set[int] = frozenset()):
        self.model = model
        self.calls: list[tuple[str, int, int, bool, Any]] = []  # name, start, end, is_norm, out node
        # Embedding lookups of the input ids: where integer input data enters the graph.
        self.data_seeds: list = []
        self._data_storages = data_storages
        self._stack: list[int] = []
        self._handles = []

    def __enter__(self):
        # Global module hooks: two registrations instead of two per module (per-module handles cost
        # ~60 µs each, a quarter of a second on an 80-layer model).
        from torch.nn.modules import module as module_lib

        names = {id(m): n for n, m in self.model.named_modules()}
        norms = {id(m) for m in self.model.modules() if is_norm_module(m)}
        embeddings = {id(m) for m in self.model.modules() if isinstance(m, nn.Embedding)} if self._data_storages else set()
        seq = torch._C._autograd._get_sequence_nr
        stack = self._stack

        def pre(mod, _args):
            if id(mod) in names:
                stack.append(seq())

        def post(mod, args, output):
            key = id(mod)
            if key not in names:
                return
            start = stack.pop()
            node = None
            if key in norms:
                tensor = output[0] if isinstance(output, (tuple, list)) and output else output
                node = tensor.grad_fn if isinstance(tensor, torch.Tensor) else None
            elif key in embeddings:
                self._embedding_hook(mod, args, output)
            self.calls.append((names[key], start, seq(), key in norms, node))

        self._handles.append(module_lib.register_module_forward_pre_hook(pre))
        self._handles.append(module_lib.register_module_forward_hook(post))
        return self

    def _embedding_hook(self, _mod, args, output):
        index = args[0] if args else None
        if isinstance(index, torch.Tensor) and _storage_key(index) in self._data_storages and output.grad_fn is not None:
            self.data_seeds.append(output.grad_fn)

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _opname(node) -> str:
    name = type(node).__name__
    return re.sub(r"Backward\d*$", "", name)


# --------------------------------------------------------------------------------------------------
# The graph and the per-γ propagation
# --------------------------------------------------------------------------------------------------
class _Graph:
    def __init__(self, sink, param_ids: set[int], data_seeds: Iterable = (), float_input_ids: set[int] = frozenset()):
        self.sink = sink
        self.inputs: dict[Any, list] = {}  # node -> input nodes (None for constants), in edge order
        self.consumers: dict[Any, list] = defaultdict(list)
        self.leaf_var: dict[Any, torch.Tensor] = {}
        self.seq: dict[Any, int] = {}
        stack = [sink]
        while stack:
            node = stack.pop()
            if node in self.inputs:
                continue
            if hasattr(node, "variable"):  # AccumulateGrad: a leaf tensor
                self.inputs[node] = []
                self.leaf_var[node] = node.variable
                continue
            self.seq[node] = node._sequence_nr()
            ins = [fn for fn, _ in node.next_functions]
            self.inputs[node] = ins
            for fn in ins:
                if fn is not None:
                    self.consumers[fn].append(node)
                    if fn not in self.inputs:
                        stack.append(fn)
        self.param_ids = param_ids
        self._is_matrix: dict[Any, bool] = {}
        self._roots: dict[Any, frozenset] = {}  # filled only when no data entry point is known
        self._data: set | None = None
        seeds = {n for n in data_seeds if n in self.seq}
        seeds |= {c for leaf, v in self.leaf_var.items() if id(v) in float_input_ids for c in self.consumers.get(leaf, ())}
        if seeds:
            self._data = set()
            for node in sorted(self.seq, key=self.seq.__getitem__):
                if node in seeds or any(i in self._data for i in self.inputs[node] if i is not None):
                    self._data.add(node)

    def is_bias_like(self, other, mine) -> bool:
        """Whether ``other`` is computed from parameters alone, relative to ``mine``.

        Such an operand (a relative position bias, a learned offset) acts as a bias, not as an
        independent signal. Where we could see where the data enters the graph (embedding lookups of
        the input ids, float inputs) that decides it; otherwise operands with no common computed
        ancestor count as bias-like.
        """
        if self._data is not None:
            return other not in self._data
        if not self._roots:
            self._compute_roots()
        return self._roots[other].isdisjoint(self._roots[mine])

    def signal_inputs(self, node) -> list:
        """Inputs that are computed signals (not constants, not leaf tensors)."""
        return [i for i in self.inputs[node] if i is not None and i not in self.leaf_var]

    def _compute_roots(self):
        # roots[n]: the graph's first computed nodes (those fed only by leaves and constants) that
        # n descends from. Two operands share an ancestor iff their root sets intersect.
        for node in sorted(self.seq, key=self.seq.__getitem__):
            ins = self.signal_inputs(node)
            if not ins:
                self._roots[node] = frozenset((node,))
                continue
            acc = self._roots[ins[0]]
            for other in ins[1:]:
                r = self._roots[other]
                if r is not acc and not r <= acc:
                    acc = acc | r
            self._roots[node] = acc

    def _is_param_view(self, node, hops: int = 4) -> bool:
        while node is not None and hops >= 0:
            if node in self.leaf_var:
                return id(self.leaf_var[node]) in self.param_ids
            if _opname(node) not in _VIEW_OPS:
                return False
            ins = [i for i in self.inputs.get(node, []) if i is not None]
            if len(ins) != 1:
                return False
            node, hops = ins[0], hops - 1
        return False

    def is_matrix_op(self, node) -> bool:
        """A linear/conv/matmul with a parameter operand: one unit of "depth"."""
        hit = self._is_matrix.get(node)
        if hit is None:
            hit = _opname(node) in _MATRIX_OPS and any(self._is_param_view(i) for i in self.inputs[node])
            self._is_matrix[node] = hit
        return hit

    def is_ancestor(self, anc, node) -> bool:
        """Whether ``anc`` is ``node`` or one of its (computed) ancestors."""
        floor = self.seq[anc]
        seen, stack = set(), [node]
        while stack:
            n = stack.pop()
            if n is anc:
                return True
            if n in seen or self.seq[n] < floor:
                continue
            seen.add(n)
            stack.extend(i for i in self.signal_inputs(n) if self.seq[i] >= floor)
        return False

    def split_point(self, a, b):
        """The latest common ancestor of ``a`` and ``b`` (highest sequence number), or ``None``."""
        marks: dict[Any, int] = {a: 1}
        marks[b] = marks.get(b, 0) | 2
        heap = [(-self.seq[n], id(n), n) for n in marks]
        heapq.heapify(heap)
        done = set()
        while heap:
            _, _, n = heapq.heappop(heap)
            if n in done:
                continue
            done.add(n)
            if marks[n] == 3:
                return n
            for i in self.signal_inputs(n):
                before = marks.get(i, 0)
                marks[i] = before | marks[n]
                if i not in done:
                    heapq.heappush(heap, (-self.seq[i], id(i), i))
        return None

    def depth(self, src, dst, agg=min) -> int | None:
        """Parametrized matrix ops on paths ``src`` → ``dst`` (``agg`` over paths; ``src`` excluded)."""
        floor = self.seq[src]
        region, stack = set(), [dst]
        while stack:  # ancestors of dst created no earlier than src
            n = stack.pop()
            if n in region or self.seq[n] < floor:
                continue
            region.add(n)
            stack.extend(self.signal_inputs(n))
        dist = {src: 0}
        for n in sorted(region, key=self.seq.__getitem__):
            if n is src:
                continue
            prev = [dist[i] for i in self.signal_inputs(n) if i in dist]
            if prev:
                dist[n] = agg(prev) + int(self.is_matrix_op(n))
        return dist.get(dst)


@dataclasses.dataclass
class _Mixing:
    seq: int
    side: str  # "branch" | "stream"
    reason: str


class _Analysis:
    def __init__(self, graph: _Graph, calls, invariance: str, sink_name: str):
        self.g = graph
        self.exact = invariance == "exact"
        self.sink_name = sink_name
        # Sequence numbers are dense, so "which module call created node n" is a table lookup.
        # Calls nest, so painting outer calls first and inner ones over them leaves, at every
        # number, the innermost call: `owners` for reasons, `norms` for the renormalization test.
        # Equal spans (a Sequential around one block): the inner call returned first, so it comes
        # earlier in `calls` and must be painted last.
        order = sorted(range(len(calls)), key=lambda k: (calls[k][1] - calls[k][2], -k))
        spans = [(calls[k][1], calls[k][2], calls[k][0], calls[k][3]) for k in order if calls[k][2] > calls[k][1]]
        self.base = min((s for s, _, _, _ in spans), default=0)
        size = max((e for _, e, _, _ in spans), default=0) - self.base
        self.owners: list[str | None] = [None] * size
        self.norms: list[str | None] = [None] * size
        for s, e, name, is_norm in spans:
            self.owners[s - self.base:e - self.base] = [name] * (e - s)
            if is_norm:
                self.norms[s - self.base:e - self.base] = [name] * (e - s)

    def _lookup(self, table, seq: int):
        k = seq - self.base
        return table[k] if 0 <= k < len(table) else None

    def owner(self, seq: int) -> str:
        """The innermost module whose call created the node with sequence number ``seq``."""
        return self._lookup(self.owners, seq) or "<model>"

    def renorm_by(self, node) -> str | None:
        """The normalization a node belongs to, if any: a signal reaching it is renormalized."""
        name = self._lookup(self.norms, self.g.seq[node])
        if name is None and _NATIVE_NORM_RE.search(type(node).__name__):
            return f"{_opname(node)} op"
        return name

    def classify(self, sources: list) -> tuple[str, str]:
        g = self.g
        state: dict[Any, str] = {}
        self._state = state
        heap: list = []
        for s in sources:
            state[s] = "scale"
            for c in g.consumers.get(s, ()):
                heapq.heappush(heap, (g.seq[c], id(c), c))
        if any(s is g.sink for s in sources):
            return "head", f"is itself the model output (`{self.sink_name}`)"
        mixings: list[_Mixing] = []
        renorms: list[str] = []
        reached_sink = False
        done = set()
        while heap:
            _, _, node = heapq.heappop(heap)
            if node in done:
                continue
            done.add(node)
            norm = self.renorm_by(node)
            if norm is not None:
                if norm not in renorms:
                    renorms.append(norm)
                continue
            ins = g.inputs[node]
            carrying = [(k, i) for k, i in enumerate(ins) if i is not None and i in state]
            op = _opname(node)
            new_state = None
            if op in _ADDITIONS:
                new_state, mixing = self._addition(node, carrying)
                if mixing is not None:
                    mixings.append(mixing)
                    continue
            else:
                states = {state[i] for _, i in carrying}
                if "dep" in states or (self.exact and op not in _HOMOGENEOUS_OPS):
                    new_state = "dep"
                elif op == "Div" and any(k == 1 for k, _ in carrying):
                    new_state = "dep" if self.exact else "scale"
                else:
                    new_state = "scale"
            state[node] = new_state
            if node is g.sink:
                reached_sink = True
            for c in g.consumers.get(node, ()):
                if c not in done:
                    heapq.heappush(heap, (g.seq[c], id(c), c))
        if mixings:
            first = min(mixings, key=lambda m: m.seq)
            return first.side, first.reason
        if reached_sink:
            return "head", f"reaches the output (`{self.sink_name}`) without renormalization or a residual add"
        names = ", ".join(f"`{n}`" for n in renorms[:3]) + (f" and {len(renorms) - 3} more" if len(renorms) > 3 else "")
        return "invariant", f"every path out of it is renormalized (by {names}); the loss does not see its scale"

    def _addition(self, node, carrying) -> tuple[str | None, _Mixing | None]:
        g = self.g
        state_of = {i: self._state[i] for _, i in carrying}
        others = [i for i in g.signal_inputs(node) if i not in state_of]
        where = self.owner(g.seq[node])
        if len(carrying) >= 2 and not others:
            states = set(state_of.values())
            if len(states) == 1:
                return states.pop(), None
            # Exact mode, one operand scales with γ, the other only depends on it.
            dep = next(i for i, s in state_of.items() if s == "dep")
            scale = next(i for i, s in state_of.items() if s == "scale")
            split = g.split_point(dep, scale)
            depth = g.depth(split, dep, agg=max) if split is not None else None
            if depth:
                return None, _Mixing(
                    g.seq[node],
                    "stream",
                    f"meets residual add in `{where}` on the stream side; the branch added to it depends on "
                    f"this γ only through non-homogeneous ops after {depth} matrix op(s), so it does not scale with γ",
                )
            return "dep", None  # an addition inside an activation (tanh-GELU's x + c·x³)
        if len(carrying) == 1 and len(others) == 1:
            (_, mine), other = carrying[0], others[0]
            if g.is_bias_like(other, mine):
                # The other operand is computed from parameters alone (a position bias, a learned
                # offset): it plays the role of a bias, not of an independent signal.
                return state_of[mine], None
            return None, self._side(node, mine, other, where)
        if carrying:
            return ("dep" if "dep" in state_of.values() else "scale"), None
        return "scale", None

    def _side(self, node, mine, other, where) -> _Mixing:
        g = self.g
        seq = g.seq[node]
        if g.is_ancestor(other, mine):
            return _Mixing(seq, "branch", f"meets residual add in `{where}` on the branch side; the other operand is the stream it started from")
        if g.is_ancestor(mine, other):
            return _Mixing(seq, "stream", f"meets residual add in `{where}` on the stream side; the other operand is a branch grown from this signal")
        split = g.split_point(mine, other)
        if split is None:
            return _Mixing(seq, "branch", f"meets add in `{where}`; the other operand shares no computed ancestor with it")
        d_mine, d_other = g.depth(split, mine), g.depth(split, other)
        if (d_mine or 0) >= (d_other or 0):
            return _Mixing(seq, "branch", f"meets residual add in `{where}` on the branch side; the other operand is the shallower path ({d_other} vs {d_mine} matrix ops since they split)")
        return _Mixing(seq, "stream", f"meets residual add in `{where}` on the stream side; the other operand is a deeper parallel branch ({d_other} vs {d_mine} matrix ops since they split)")


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------
# transformers.Trainer's name patterns for "no decay" (transformers 5.x `get_decay_parameter_names`).
_HF_NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


def hf_default_decay_names(model: nn.Module) -> set[str]:
    """The parameter names ``transformers.Trainer`` decays for ``model``.

    When ``transformers.trainer`` is loaded, its own ``get_decay_parameter_names`` is called unbound
    (it reads nothing from ``self``), which is HF's exact rule for the installed version. Otherwise
    the same rule is applied through ``trainer_pt_utils`` rather than importing the Trainer (~85 MB).
    """
    trainer_module = sys.modules.get("transformers.trainer")
    if trainer_module is not None:
        return set(trainer_module.Trainer.get_decay_parameter_names(None, model))
    from transformers.trainer_pt_utils import get_parameter_names

    return set(get_parameter_names(model, [nn.LayerNorm], _HF_NO_DECAY_PATTERNS))


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


class _TemporaryAnalysisState:
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


class _MetaForward(TorchDispatchMode):
    """Makes a forward pass on the ``meta`` device run, and run fast.

    * Answers ``.item()``/``bool()`` on meta tensors, which hold no values, with 1/True. Workaround
      for data-dependent checks in model code, e.g. transformers' ``masking_utils`` asks
      ``padding_mask.all()`` to decide whether a mask can be skipped. Our dummy masks are all ones,
      so "true" is the honest answer, and the graph's shape does not depend on it. It can go once HF
      guards those checks for meta tensors as it does for FakeTensors (``is_tracing``).
    * Computes the result metadata of common pointwise ops directly (see ``_FAST_BINARY``). Autograd
      sits above this mode, so the recorded graph is the same; only the result's strides may be
      contiguous where the real op would have kept an input's layout.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        first = args[0] if args else None
        if isinstance(first, torch.Tensor) and first.device.type == "meta":
            if func in _FAST_BINARY:
                other = args[1]
                shape = _broadcast(first.shape, other.shape) if isinstance(other, torch.Tensor) else first.shape
                dtype = torch.result_type(first, other)
                if func in (_aten.div.Tensor, _aten.div.Scalar) and not dtype.is_floating_point:
                    return func(*args, **(kwargs or {}))  # true division of integers: leave to torch
                return torch.empty(shape, dtype=dtype, device="meta")
            if (func in _FAST_UNARY and first.is_floating_point() and not kwargs
                    and all(a is None or a is False or isinstance(a, int) for a in args[1:])):
                return torch.empty(first.shape, dtype=first.dtype, device="meta")
            if func is _aten._local_scalar_dense.default:
                return True if first.dtype is torch.bool else (1.0 if first.is_floating_point() else 1)
        return func(*args, **(kwargs or {}))


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


def _prepare_inputs(obj, device, storages: set[int], float_ids: set[int]):
    """Move inputs to ``device``. A float tensor becomes a leaf that requires grad, passed on through a
    clone: the clone is a computed node, so the input counts as a signal where it meets an addition
    (a raw input can be the residual stream), and it marks where data enters the graph. Integer
    tensors are remembered by storage (embedding lookups of them are data)."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            leaf = obj.detach().to(device).requires_grad_(True)
            float_ids.add(id(leaf))
            return leaf.clone()
        moved = obj.to(device)
        storages.add(_storage_key(moved))
        return moved
    if isinstance(obj, Mapping):
        return {k: _prepare_inputs(v, device, storages, float_ids) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_prepare_inputs(v, device, storages, float_ids) for v in obj)
    return obj


def _run(model: nn.Module, inputs, device) -> tuple[Any, _Recorder, str, set[int]]:
    """Run one recorded forward. Returns (graph sink node, recorder, sink name, ids of float inputs)."""
    meta = torch.device(device).type == "meta"
    storages: set[int] = set()
    float_ids: set[int] = set()
    inputs = _prepare_inputs(inputs, device, storages, float_ids)
    with _Recorder(model, storages) as rec, torch.enable_grad(), (_MetaForward() if meta else contextlib.nullcontext()):
        output = _call(model, inputs)
    sink_name, out = _output_tensor(output)
    if out.grad_fn is None:
        raise GammaAnalysisError(
            f"the model output `{sink_name}` does not depend on any parameter (no autograd graph); "
            "is the forward wrapped in torch.no_grad or are all parameters detached?"
        )
    rec.float_input_ids = float_ids
    return out.grad_fn, rec, sink_name, output


def classify_gammas(model: nn.Module, inputs=None, *, invariance: str = "exact") -> GammaReport:
    """Assign every normalization scale γ of ``model`` one of the roles in ``ROLES``.

    Args:
        model: any ``nn.Module``; Hugging Face models get dummy inputs from their config.
        inputs: one tiny batch for the forward pass: a dict of keyword tensors, a tuple of positional
            ones, or a tensor. ``None`` builds dummy inputs (see :func:`dummy_inputs`).
        invariance: ``"exact"`` (a signal scales with γ only through positively homogeneous ops) or
            ``"approximate"`` (every op passes the scale on). See DESIGN.md § Invariance mode.

    The forward pass runs on a ``meta``-device copy of the model whenever it can (no memory, no
    compute); otherwise on the real model with ``inputs`` on its device. Either way the model's
    weights, buffers, train/eval modes, ``requires_grad`` flags and the global RNG state are left as
    they were, and no ``.grad`` is written.
    """
    if invariance not in INVARIANCE_MODES:
        raise ValueError(f"invariance must be one of {INVARIANCE_MODES}, got {invariance!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"classify_gammas expects a torch.nn.Module, got {type(model).__name__}")
    # The pass allocates ~10 small objects per autograd node and frees none until the end; the
    # cyclic GC would rescan them again and again (a quarter of the time on an 80-layer model).
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        return _classify(model, inputs, invariance)
    finally:
        if gc_enabled:
            gc.enable()


def _classify(model: nn.Module, inputs, invariance: str) -> GammaReport:
    gammas = find_gammas(model)
    numel = {n: getattr(p, "ds_numel", p.numel()) for n, p in model.named_parameters() if n in gammas}  # ZeRO-3
    try:
        hf_default = sorted(hf_default_decay_names(model) & set(gammas))
    except Exception:  # pragma: no cover - only if transformers' Trainer API changes shape
        logger.warning("could not read transformers.Trainer's decay rule; hf-default treats γ as not decayed")
        hf_default = []
    report = GammaReport(
        roles={}, reasons={}, norm_types=gammas, numel=numel, hf_default=hf_default,
        invariance=invariance, model_class=type(model).__name__,
    )
    if not gammas:
        warnings.warn(
            f"{type(model).__name__} has no normalization scale parameters (γ); "
            "nothing to classify, the Trainer's default weight decay applies",
            stacklevel=2,
        )
        return report

    run_model, device, errors = None, None, []
    on_meta = _model_device(model).type == "meta"
    if not on_meta:
        try:
            run_model = _meta_copy(model)
            run_model.eval()
            device = torch.device("meta")
            if inputs is None:
                inputs_run = dummy_inputs(model, device)
            else:
                inputs_run = inputs
            sink, rec, sink_name, _ = _run(run_model, inputs_run, device)
        except Exception as exc:  # the model cannot run on meta: fall back to the real device
            errors.append(f"on meta: {type(exc).__name__}: {exc}")
            run_model = None
    if run_model is None:
        run_model = model
        device = _model_device(model)
        try:
            with _TemporaryAnalysisState(model, restore_buffers=not on_meta):
                inputs_run = dummy_inputs(model, device) if inputs is None else inputs
                sink, rec, sink_name, _ = _run(model, inputs_run, device)
                return _finish(report, run_model, sink, rec, sink_name, invariance, device)
        except GammaAnalysisError:
            raise
        except Exception as exc:
            errors.append(f"on {device}: {type(exc).__name__}: {exc}")
            raise GammaAnalysisError(
                f"could not run {type(model).__name__}'s forward to read its dataflow "
                f"({'; '.join(errors)}). Pass `inputs=` to classify_gammas with one tiny batch the "
                "model accepts (e.g. the dict your data collator produces), or a precomputed "
                "`gamma_report=` to the Trainer."
            ) from exc
    return _finish(report, run_model, sink, rec, sink_name, invariance, device)


def _finish(report: GammaReport, run_model, sink, rec: _Recorder, sink_name, invariance, device) -> GammaReport:
    names = {id(p): n for n, p in run_model.named_parameters()}
    graph = _Graph(sink, set(names), rec.data_seeds, getattr(rec, "float_input_ids", set()))
    used = {names.get(id(v)) for v in graph.leaf_var.values()}
    sources: dict[str, list] = defaultdict(list)
    for module_name, _s, _e, is_norm, node in rec.calls:
        if not is_norm or node is None or node not in graph.inputs or node in graph.leaf_var:
            continue
        gamma = norm_gamma(run_model.get_submodule(module_name))
        if gamma is not None and names.get(id(gamma)) in report.norm_types:
            sources[names[id(gamma)]].append(node)
    analysis = _Analysis(graph, rec.calls, invariance, sink_name)
    for name in report.norm_types:
        if name not in used or not sources.get(name):
            report.unused.append(name)
            continue
        role, reason = analysis.classify(sources[name])
        report.roles[name] = role
        report.reasons[name] = reason
    report.device = str(device)
    return report
