"""The autograd graph of one forward pass, and the per-γ propagation that reads each γ's role from it.

A signal leaves a γ (the output of its norm) and is followed forward in sequence-number order, which makes
each node's state final when it is read. It stops where it enters another normalization; the first
addition that mixes in an independent signal decides ``branch`` or ``stream`` (a fusion of two independent
inputs, whose operands share no computed ancestor, is ``stream``); reaching the output
without one is ``head``; every path renormalized is ``invariant``.
"""

from __future__ import annotations

import dataclasses
import heapq
import re
from collections import defaultdict
from typing import Any, Iterable

import torch

from .norms import NATIVE_NORM_RE as _NATIVE_NORM_RE

# Autograd node names (without the ``Backward<N>`` suffix) of ops that are positively homogeneous
# in the γ-carrying operand: f(a·x) = a·f(x) for a > 0, other operands held fixed. Linear layers with
# a bias are affine, not homogeneous; docs/design.md counts them as homogeneous (the bias is a parameter,
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
) | frozenset(
    # Writes and selections: every element of the result is an element of the tensor written into or of a value
    # written in (`x[mask] = 0`, `index_put_`, `masked_scatter_`, `torch.where(mask, x, c)`; into a view, `x[:, :k] = v`
    # as the `CopySlices` node's `Copy`/`Fill`/`Zero`). So the result scales with each operand that carries the
    # signal, for the elements it keeps; a constant written in has no autograd edge and is no signal.
    """IndexPut IndexPutImpl MaskedScatter IndexFill IndexCopy Scatter Put Where Copy Fill Zero CopyBackwards""".split()
)
# Writes over a whole tensor: `x.fill_(c)` and `x.zero_()` leave a constant (the signal ends there); `x.copy_(v)`
# leaves `v` (the signal goes on only if `v` carries it). Autograd still links them to the overwritten tensor.
_OVERWRITES = frozenset(("Fill", "Zero"))
_COPY = "CopyBackwards"
# "Parametrized matrix op": one of these with a parameter (possibly through a view) as operand.
_MATRIX_OPS = frozenset(
    """Addmm Mm Bmm Mv Matmul Linear Baddbmm Addbmm Addmv Convolution ConvolutionBackwardOverrideable
    SlowConv2D ConvDepthwise2D MkldnnConvolution""".split()
)
_VIEW_OPS = frozenset("T Transpose Permute View Expand Reshape ReshapeAlias ToCopy Clone Unsqueeze Alias".split())
_ADDITIONS = frozenset(("Add", "Sub"))


# What a layer scale's product may pass through on its way to the residual addition.
_PASS_THROUGH = frozenset("""T Transpose Permute View Expand Reshape ReshapeAlias ToCopy Clone Unsqueeze Alias Squeeze
    SqueezeDim Flatten Contiguous Dropout NativeDropout""".split())


def _opname(node) -> str:
    name = type(node).__name__
    return re.sub(r"Backward\d*$", "", name)


op_name = _opname  # the same reading, for the other analysis modules



class Graph:
    def __init__(self, sink, param_ids: set[int], data_seeds: Iterable = (), float_input_ids: set[int] = frozenset(),
                 view_writes: dict[int, str] | None = None):
        self.sink = sink
        self.view_writes = view_writes or {}  # CopySlices sequence number -> the in-place op that wrote the view
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
        seeds |= {c for leaf, v in self.leaf_var.items() if id(v) in float_input_ids
                  for c in self.consumers.get(leaf, ())}
        self._from_params: set | None = None
        if seeds:
            self._data = set()
            self._from_params = set()
            for node in sorted(self.seq, key=self.seq.__getitem__):
                ins = [i for i in self.written_in(node) if i is not None]
                if node in seeds or any(i in self._data for i in ins):
                    self._data.add(node)
                elif any(i in self._from_params or id(self.leaf_var.get(i)) in param_ids for i in ins):
                    self._from_params.add(node)

    def op(self, node) -> tuple[str, bool]:
        """``(op, into_view)``: the op a node computed, and whether it wrote into a view of a larger tensor.

        Autograd records an in-place op on a view (``x[:, :k] = v``, ``x[..., 0].tanh_()``) as a ``CopySlices``
        node on the base tensor, which does not say which op it was: the forward's record of the writes names it
        (``copy_`` → ``Copy``). Unrecorded, it stays ``CopySlices``: not homogeneous.
        """
        name = _opname(node)
        if name != "CopySlices":
            return name, False
        written = self.view_writes.get(self.seq[node])
        if written is None:
            return name, True
        return "".join(part.capitalize() for part in written.strip("_").split("_")), True

    def written_in(self, node) -> list:
        """The inputs whose elements the node's result holds: all of them, except for a write over a whole tensor
        (``x.fill_(c)``, ``x.zero_()``: none, a constant is left; ``x.copy_(v)``: ``v`` only)."""
        op = _opname(node)
        if op in _OVERWRITES:
            return []
        return self.inputs[node][1:] if op == _COPY else self.inputs[node]

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

    def is_param_operand(self, node, hops: int = 6) -> bool:
        """Whether ``node`` is computed from parameters alone: a parameter, a view of one, or anything derived
        from parameters without data — a weight-standardized conv kernel (BiT: ``batch_norm`` of the weight),
        the experts' weights gathered for each token (MoE), a reshaped or cast weight."""
        if node in self.leaf_var:
            return id(self.leaf_var[node]) in self.param_ids
        if self._from_params is not None:
            return node in self._from_params
        # Where the data enters is unknown: follow single-input chains back to a parameter.
        while node is not None and hops >= 0:
            if node in self.leaf_var:
                return id(self.leaf_var[node]) in self.param_ids
            ins = [i for i in self.inputs.get(node, []) if i is not None]
            if len(ins) != 1:
                return False
            node, hops = ins[0], hops - 1
        return False

    def is_matrix_op(self, node) -> bool:
        """A linear/conv/matmul with a parameter operand: one unit of "depth"."""
        hit = self._is_matrix.get(node)
        if hit is None:
            hit = _opname(node) in _MATRIX_OPS and any(self.is_param_operand(i)
                                                       for i in self.inputs[node] if i is not None)
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


    def layer_scales(self, candidates: dict[int, str]) -> dict[str, Any]:
        """``{name: source node}`` for parameters that act as a per-channel scale at the end of a residual branch.

        ``candidates`` maps ``id(parameter)`` to its name. A layer scale (ConvNeXt ``layer_scale_parameter``,
        BEiT/DINOv2 ``lambda``, CaiT ``gamma``) is a parameter with one non-singleton dimension that multiplies a
        data signal, whose product reaches an addition (through views and dropout only) whose other operand is
        an ancestor of that signal: ``x + γ ⊙ F(x)``. The product is the γ's signal, as a norm's output is.
        """
        found: dict[str, Any] = {}
        for leaf, var in self.leaf_var.items():
            name = candidates.get(id(var))
            if name is None or sum(1 for d in var.shape if d > 1) != 1:
                continue
            for mul, via in self._consumers_through(leaf, _VIEW_OPS, "Mul"):
                others = [i for i in self.inputs[mul] if i is not None and i is not via]
                if len(others) != 1 or others[0] in self.leaf_var:
                    continue
                signal = others[0]
                if self._data is not None and signal not in self._data:
                    continue
                for add, chain in self._consumers_through(mul, _PASS_THROUGH, "Add"):
                    rest = [i for i in self.signal_inputs(add) if i is not chain]
                    if len(rest) == 1 and self.is_ancestor(rest[0], signal):
                        found.setdefault(name, mul)
                        break
                if name in found:
                    break
        return found

    def _consumers_through(self, node, passing: frozenset, target: str, hops: int = 4):
        """``(consumer, input it came through)`` pairs: ``target`` ops reached from ``node`` via ``passing`` ops."""
        frontier = [(node, hops)]
        while frontier:
            n, left = frontier.pop()
            for c in self.consumers.get(n, ()):
                op = _opname(c)
                if op == target:
                    yield c, n
                elif op in passing and left > 0:
                    frontier.append((c, left - 1))


def paint_spans(calls, value, keep=lambda call: True) -> tuple[int, list]:
    """``(base, table)``: ``table[seq - base]`` is ``value(k, call)`` of the innermost call ``k`` whose span holds
    sequence number ``seq`` (among the calls ``keep`` accepts), ``None`` where no call does.

    Sequence numbers are dense, so "which module call created node n" becomes a table lookup. Calls nest, so
    painting outer calls first and inner ones over them leaves the innermost call at every number. Equal spans (a
    Sequential around one block): the inner call returned first, so it comes earlier in ``calls`` and is painted
    last.
    """
    spans = [(k, c) for k, c in enumerate(calls) if c.end > c.start and keep(c)]
    if not spans:
        return 0, []
    base = min(c.start for _, c in spans)
    table: list = [None] * (max(c.end for _, c in spans) - base)
    for k, c in sorted(spans, key=lambda kc: (kc[1].start - kc[1].end, -kc[0])):
        table[c.start - base:c.end - base] = [value(k, c)] * (c.end - c.start)
    return base, table


def own_ops(graph: Graph, calls) -> list[set[str]]:
    """For each module call, the op names of the autograd nodes it created itself (not its children)."""
    out: list[set[str]] = [set() for _ in calls]
    base, owner = paint_spans(calls, lambda k, _c: k)
    for node, seq in graph.seq.items():
        i = seq - base
        if 0 <= i < len(owner) and owner[i] is not None:
            out[owner[i]].add(_opname(node))
    return out


@dataclasses.dataclass
class _Mixing:
    seq: int
    side: str  # "branch" | "stream"
    reason: str


@dataclasses.dataclass
class _Walk:
    """What one γ's walk met on the way: mixing additions, renormalizations, whole-tensor overwrites, the output."""

    mixings: list[_Mixing] = dataclasses.field(default_factory=list)
    renorms: list[str] = dataclasses.field(default_factory=list)  # the norms that renormalized it, first met first
    overwritten: list[str] = dataclasses.field(default_factory=list)  # modules where a constant overwrote it
    reached_sink: bool = False


class Propagation:
    """The per-γ propagation over one `Graph`: follows a γ's signal forward and reads its role."""

    def __init__(self, graph: Graph, calls, invariance: str, sink_name: str):
        self.g = graph
        self.exact = invariance == "exact"
        self.sink_name = sink_name
        # `calls`: (ModuleCall, renormalizes) pairs. `owners`: the innermost call at each sequence number, for
        # reasons; `norms`: the innermost normalizing call, for the renormalization test.
        self.owners = paint_spans([c for c, _ in calls], lambda _k, c: c.name)
        norm_names = {c.name for c, is_norm in calls if is_norm}
        self.norms = paint_spans([c for c, _ in calls], lambda _k, c: c.name, keep=lambda c: c.name in norm_names)

    @staticmethod
    def _lookup(painted, seq: int):
        base, table = painted
        k = seq - base
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
        """``(role, reason)`` of the γ whose signal leaves the nodes ``sources``: the walk, then its verdict."""
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
        walk = _Walk()
        done = set()
        while heap:
            _, _, node = heapq.heappop(heap)
            if node in done:
                continue
            done.add(node)
            new_state = self._visit(node, walk)
            if new_state is None:
                continue
            state[node] = new_state
            if node is g.sink:
                walk.reached_sink = True
            for c in g.consumers.get(node, ()):
                if c not in done:
                    heapq.heappush(heap, (g.seq[c], id(c), c))
        return self._verdict(walk)

    def _visit(self, node, walk: "_Walk") -> str | None:
        """The signal's state after ``node`` (``"scale"`` or ``"dep"``), or ``None`` where it goes no further:
        renormalized, overwritten, or at a mixing addition (each noted in ``walk``)."""
        g = self.g
        norm = self.renorm_by(node)
        if norm is not None:
            if norm not in walk.renorms:
                walk.renorms.append(norm)
            return None
        ins = g.inputs[node]
        carrying = [(k, i) for k, i in enumerate(ins) if i is not None and i in self._state]
        op, into_view = g.op(node)
        if not into_view and (op in _OVERWRITES or op == _COPY):
            # A whole tensor overwritten: its old elements are gone, only what was written in goes on.
            kept = g.written_in(node)
            carrying = [(k, i) for k, i in carrying if any(i is j for j in kept)]
            if not carrying:
                walk.overwritten.append(self.owner(g.seq[node]))
                return None
        if op in _ADDITIONS:
            new_state, mixing = self._addition(node, carrying)
            if mixing is not None:
                walk.mixings.append(mixing)
                return None
            return new_state
        states = {self._state[i] for _, i in carrying}
        if "dep" in states or (self.exact and op not in _HOMOGENEOUS_OPS):
            return "dep"
        if op == "Div" and any(k == 1 for k, _ in carrying):
            return "dep" if self.exact else "scale"
        return "scale"

    def _verdict(self, walk: "_Walk") -> tuple[str, str]:
        """The role and reason a finished walk reads: its first mixing addition in sequence order, else the output
        reached (``head``), else every path renormalized or overwritten (``invariant``)."""
        if walk.mixings:
            first = min(walk.mixings, key=lambda m: m.seq)
            return first.side, first.reason
        if walk.reached_sink:
            return "head", f"reaches the output (`{self.sink_name}`) without renormalization or a residual add"
        renorms, overwritten = walk.renorms, walk.overwritten
        if not renorms and overwritten:
            return "invariant", (f"every path out of it is overwritten by a constant (in `{overwritten[0]}`) before "
                                 "the output; the loss does not see its scale")
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
            return _Mixing(seq, "branch", f"meets residual add in `{where}` on the branch side; the other operand "
                                          "is the stream it started from")
        if g.is_ancestor(mine, other):
            return _Mixing(seq, "stream", f"meets residual add in `{where}` on the stream side; the other operand "
                                          "is a branch grown from this signal")
        split = g.split_point(mine, other)
        if split is None:
            # docs/design.md "Fusion additions": two inputs or modalities summed. No residual stream runs through it, so
            # there is no branch to shrink toward the identity; shrinking γ re-weights one input against the other.
            return _Mixing(seq, "stream", f"meets add in `{where}`, a fusion of independent inputs: the other operand "
                                          "shares no computed ancestor with it, so there is no residual branch to "
                                          "shrink; its scale weighs one input against the other")
        d_mine, d_other = g.depth(split, mine), g.depth(split, other)
        if (d_mine or 0) >= (d_other or 0):
            return _Mixing(seq, "branch", f"meets residual add in `{where}` on the branch side; the other operand "
                                          f"is the shallower path ({d_other} vs {d_mine} matrix ops since they split)")
        return _Mixing(seq, "stream", f"meets residual add in `{where}` on the stream side; the other operand is a "
                                      f"deeper parallel branch ({d_other} vs {d_mine} matrix ops since they split)")

