"""`read_roles`: find the γ, run one recorded forward (on meta where possible), read each γ's role."""

from __future__ import annotations

import gc
import itertools
import logging
import traceback
import warnings
from collections import defaultdict

import torch
from torch import nn

from ..report import GammaReport
from ..roles import INVARIANCE_MODES, GammaAnalysisError
from .graph import Graph, Propagation, own_ops
from .inputs import (
    candidate_inputs,
    describe_inputs,
    input_shapes,
    inputs_left_out,
    single_example,
    with_config_gaps_filled,
    with_placeholders,
)
from .materialize import SEED, cpu_copy, cpu_copy_limit, has_meta_tensors, state_bytes
from .norms import is_candidate, is_norm_module, is_torch_norm, norm_gamma, normalizes
from .offsets import offset_scales
from .trace import (
    ForeignForward,
    TemporaryAnalysisState,
    Trace,
    instance_forwards,
    meta_copy,
    model_device,
    record_forward,
    use_class_forwards,
)

logger = logging.getLogger(__name__)

_MAX_INPUT_ATTEMPTS = 24  # candidate dummy batches tried before giving up (each failure on meta takes milliseconds)
_OUTSIDE_AUTOGRAD = (
    "used in the forward only with autograd off (under torch.no_grad, or inside a custom autograd Function such "
    "as reversible layers): no role can be read from the graph; decayed as hf-default decides unless "
    "gamma_include/gamma_exclude name it")


def read_roles(model: nn.Module, inputs=None, *, invariance: str = "exact") -> GammaReport:
    """Assign every normalization scale γ of ``model`` one of the roles in ``ROLES`` (`classify_gammas` is its
    public name).

    Args:
        model: any ``nn.Module``; Hugging Face models get dummy inputs from their config.
        inputs: one tiny batch for the forward pass: a dict of keyword tensors, a tuple of positional
            ones, or a tensor. ``None`` builds dummy inputs (see :func:`candidate_inputs`).
        invariance: ``"exact"`` (a signal scales with γ only through positively homogeneous ops) or
            ``"approximate"`` (every op passes the scale on). See docs/design.md § Invariance modes.

    A γ is the scale of a module that normalizes its input — decided from the recorded computation
    (a statistic of the input and a division by it), not from the class name — or a layer-scale
    parameter (a per-channel scale at the end of a residual branch). The forward pass runs on a
    ``meta``-device copy of the model whenever it can (no memory, no compute); otherwise on the real
    model with ``inputs`` on its device. Either way the model's weights, buffers, train/eval modes,
    ``requires_grad`` flags and the global RNG state are left as they were, and no ``.grad`` is written.

    The report records which batch the pass ran on (``inputs_source``: ``"dummy"`` or ``"user inputs"``, and
    ``inputs_shapes``). γ that a dummy pass does not reach (a vision tower fed no image) get no role and one
    warning naming their modules. When no batch runs, the `GammaAnalysisError` names each batch tried, the
    model's own exception, and the remedies.
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


def _no_gammas(model: nn.Module, report: GammaReport) -> GammaReport:
    warnings.warn(
        f"{type(model).__name__} has no normalization scale parameters (γ); "
        "nothing to classify, the Trainer's default weight decay applies",
        stacklevel=4,
    )
    return report


def _attempts(model: nn.Module, inputs, device, failures: list):
    """The batches to try, in order. ``failures`` gets ``(batch, exception)`` from the caller as each one fails:
    a multimodal batch refused for its placeholder-token count is retried at once with the count the model named."""
    if inputs is not None:
        yield inputs
        return
    # For a meta run the dummy batch is built on the CPU and moved: its integer parts keep their values.
    build_on = "cpu" if device.type == "meta" else device
    first = None
    for batch in itertools.islice(candidate_inputs(model, build_on), _MAX_INPUT_ATTEMPTS):
        first = batch if first is None else first
        yield batch
        if failures and failures[-1][0] is batch:
            for fixed in with_placeholders(model, batch, failures[-1][1]):
                yield fixed
                if not (failures and failures[-1][0] is fixed):
                    break  # it ran
    # Last, the first batch cut to one example: heads that refuse a batch of several without a pad token
    # (GPT-2's sequence classifier finds each sequence's last token through `pad_token_id`).
    single = single_example(first) if first is not None else None
    if single is not None:
        yield single


class _Tries:
    """The batches a pass tried and what each raised: read back by `_attempts`, named by the final error."""

    def __init__(self):
        self.errors: list[str] = []
        self.tried: list[str] = []  # each batch tried, as "input_ids [2, 8], …", once
        self.failures: list = []  # (batch, exception)
        self.not_copied = ""  # why the last pass, on a CPU copy with real values, was not made (its size)

    def note(self, batch, where: str, exc: Exception) -> None:
        described = describe_inputs(batch)
        if described not in self.tried:
            self.tried.append(described)
        self.errors.append(f"on {where}: {type(exc).__name__}: {_first_line(exc)}")
        self.failures.append((batch, exc))


def _classify(model: nn.Module, inputs, invariance: str) -> GammaReport:
    report = GammaReport(roles={}, reasons={}, norm_types={}, invariance=invariance, model_class=type(model).__name__,
                         inputs_source="dummy" if inputs is None else "user inputs")
    # Nothing owns a 1-D scale: no norm has a γ (layer scales live in normalized networks too), so no forward
    # pass is needed — or wanted, since a model without γ may take inputs we cannot guess.
    if not any(is_candidate(m) and norm_gamma(m) is not None for m in model.modules()):
        return _no_gammas(model, report)
    tries = _Tries()
    on_meta = model_device(model).type == "meta"
    if not on_meta:
        done = _on_meta_copy(model, inputs, invariance, report, tries)
        if done is not None:
            return done
    device = model_device(model)
    try:
        with TemporaryAnalysisState(model, restore_buffers=not on_meta):
            done, failure = _on_model(model, inputs, invariance, report, tries, device)
            if done is None and inputs is None:
                done, failure = _on_filled_copy(model, invariance, report, tries, failure)
            if done is None and has_meta_tensors(model):
                done, failure = _on_cpu_copy(model, inputs, invariance, report, tries, failure)
            if done is not None:
                return done
            raise failure if failure is not None else RuntimeError("no input batch to try")
    except GammaAnalysisError:
        raise
    except Exception as exc:
        raise _no_pass_error(model, inputs, tries, device, exc) from exc


def _on_meta_copy(model: nn.Module, inputs, invariance: str, report: GammaReport, tries: _Tries):
    """The roles read on a meta copy of a real model (``None``: no batch ran there, or the copy reaches the model)."""
    repointed: list = []
    run_model = meta_copy(model, repointed)
    for patch in repointed:
        logger.info("hf_gammareg: %s, which closes over the original model; the meta copy runs it with the "
                    "closure pointed at the copy", patch)
    run_model.eval()
    device = torch.device("meta")
    # Nothing on meta draws random numbers; the fork makes sure of it for a forward that would.
    with torch.random.fork_rng(devices=[]):
        for batch in _attempts(model, inputs, device, tries.failures):
            try:
                trace = _record_copy(model, run_model, batch, device)
            except GammaAnalysisError:
                raise
            except ForeignForward as exc:
                warnings.warn(
                    f"{type(model).__name__}: the forward of its meta copy reaches the model itself ({exc}), so "
                    "the copy cannot show the dataflow; the roles are read on the model itself instead (eval "
                    "mode; weights, buffers and RNG restored after).", stacklevel=5)
                return None
            except Exception as exc:  # this batch (or meta itself) does not work: try the next
                tries.note(batch, "meta", exc)
                continue
            report.inputs_shapes = input_shapes(batch)
            return _finish(report, model, run_model, trace, invariance, device)
    return None


def _on_model(model: nn.Module, inputs, invariance: str, report: GammaReport, tries: _Tries, device):
    """``(report, None)`` from a pass on the model itself (its analysis state held by the caller), or
    ``(None, the last exception)``."""
    failure = None
    for batch in _attempts(model, inputs, device, tries.failures):
        try:
            trace = record_forward(model, batch, device)
        except GammaAnalysisError:
            raise
        except Exception as exc:
            tries.note(batch, str(device), exc)
            failure = exc
            continue
        report.inputs_shapes = input_shapes(batch)
        return _finish(report, model, model, trace, invariance, device), None
    return None, failure


def _on_filled_copy(model: nn.Module, invariance: str, report: GammaReport, tries: _Tries, failure):
    """Last, dummy batches on a meta copy whose config has the values a bare config leaves unset (a router's
    top-k, a placeholder token id…) filled in from its own fields: ``(report, None)`` or ``(None, last exception)``."""
    gaps = with_config_gaps_filled(model, meta_copy)
    if gaps is None:
        return None, failure
    filled_model, filled = gaps
    filled_model.eval()
    meta = torch.device("meta")
    for batch in _attempts(filled_model, None, meta, tries.failures):
        try:
            with torch.random.fork_rng(devices=[]):
                trace = _record_copy(model, filled_model, batch, meta)
        except GammaAnalysisError:
            raise
        except Exception as exc:  # ForeignForward included: the copy cannot show the dataflow either
            tries.note(batch, "meta with " + ", ".join(filled), exc)
            failure = exc
            continue
        warnings.warn(f"{type(model).__name__}'s forward needs values its config leaves unset: the "
                      f"roles were read on a copy with {', '.join(filled)} (the model and its config "
                      "are unchanged); set them in the config to read them as you train",
                      stacklevel=5)
        report.inputs_shapes = input_shapes(batch)
        return _finish(report, model, filled_model, trace, invariance, meta), None
    return None, failure


def _on_cpu_copy(model: nn.Module, inputs, invariance: str, report: GammaReport, tries: _Tries, failure):
    """Last, for a model on ``meta`` (in whole or in part) that no meta pass ran: the batches on a copy on the CPU
    with real values (its own initialization under a fixed seed, `cpu_copy`), then on one with its config's gaps
    filled as `_on_filled_copy` fills them. A forward that sizes tensors from values computed from its activations
    (token routing, predicted durations) runs there. ``(report, None)`` or ``(None, the last exception)``; a copy
    over `cpu_copy_limit` is not made, and the final error says so."""
    if inputs is None and not tries.tried:
        return None, failure  # the builder made no batch for this forward: it makes none for a copy either
    size, limit = state_bytes(model), cpu_copy_limit()
    if size > limit:
        tries.not_copied = (
            f"A copy with real values on the CPU, the last pass for a forward that sizes tensors from values, was not "
            f"made: it would hold {_bytes(size)}, over the {_bytes(limit)} the analysis allocates on its own "
            "(hf_gammareg.analysis.materialize.MAX_CPU_COPY_BYTES, at most a quarter of the memory available); "
            "classify the model loaded on a real device, where its forward runs on its own weights. ")
        return None, failure
    meta_error = next((e.split(": ", 1)[1] for e in tries.errors if e.startswith("on meta")), None)
    cpu = torch.device("cpu")
    for source, filled in _copy_sources(model, inputs):
        zeroed: list[str] = []
        run_model = cpu_copy(source, zeroed=zeroed)
        run_model.eval()
        for batch in _attempts(run_model, inputs, cpu, tries.failures):
            try:
                with torch.random.fork_rng(devices=[]):
                    trace = record_forward(run_model, batch, cpu)
            except GammaAnalysisError:
                raise
            except Exception as exc:
                tries.note(batch, "a CPU copy" + (" with " + ", ".join(filled) if filled else ""), exc)
                traceback.clear_frames(exc.__traceback__)  # the lines stay; the frames' hold on the copy goes
                failure = exc
                continue
            _warn_cpu_copy(model, meta_error, size, filled, zeroed)
            report.inputs_shapes = input_shapes(batch)
            return _finish(report, model, run_model, trace, invariance, cpu), None
        del run_model  # before the next copy is made
    return None, failure


def _warn_cpu_copy(model: nn.Module, meta_error: str | None, size: int, filled: list[str], zeroed: list[str]):
    """The warning that the roles were read on a CPU copy with random weights, and why (the meta exception)."""
    notes = [f"the model's own initialization, seed {SEED}", _bytes(size), *filled]
    if zeroed:
        notes.append(f"{len(zeroed)} tensor attribute(s) made on meta, with no value, as zeros: "
                     + ", ".join(f"`{n}`" for n in zeroed[:3]) + (" …" if len(zeroed) > 3 else ""))
    warnings.warn(
        f"{type(model).__name__}'s forward does not run on meta" + (f" (there it raised {meta_error})" if meta_error
                                                                    else "")
        + ": a forward that sizes tensors from values computed from its activations (token routing, predicted "
        f"durations) cannot, as meta holds no values. The roles of its γ were read on a CPU copy with random weights "
        f"({'; '.join(notes)}); the model is unchanged. Roles are read from the dataflow, which these values do not "
        "change.", stacklevel=6)


def _bytes(n: int) -> str:
    """``n`` bytes as a short size: ``2.9 GiB``, ``297 MiB``, ``12 KiB``."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{max(1, round(n / 2**10))} KiB"


def _copy_sources(model: nn.Module, inputs):
    """``(model to copy onto the CPU, config values filled)``: ``model``, then (dummy inputs only) a meta copy of it
    with its config's gaps filled, made only when the CPU copy of the one before ran no batch."""
    yield model, []
    if inputs is None:
        gaps = with_config_gaps_filled(model, meta_copy)
        if gaps is not None:
            yield gaps


def _no_pass_error(model: nn.Module, inputs, tries: _Tries, device, exc: Exception) -> GammaAnalysisError:
    """The error when no batch ran: the model's own exception, the batches tried, the remedy."""
    errors, tried, failures = tries.errors, tries.tried, tries.failures
    shown = errors[:1] + (["…", errors[-1]] if len(errors) > 1 else [])
    kind = "the batch given as inputs=" if inputs is not None else f"{len(tried)} dummy batch(es)"
    if not tried:  # the builder made no batch at all: the forward names no input it knows
        return GammaAnalysisError(
            f"cannot build a dummy batch for {type(model).__name__}: its forward names no input the builder "
            f"knows ({', '.join(f'`{n}`' for n in inputs_left_out(model, [])) or 'it declares none by name'}). "
            "Pass `inputs=` to classify_gammas with one tiny batch the model accepts, or a precomputed "
            "`gamma_report=` to the Trainer.")
    if inputs is not None:
        # The model's own exception first: the last pass's (on its device, or on the CPU copy of a meta model), then
        # an earlier one's where it differs.
        where, own = (errors[-1].split(": ", 1) if errors
                      else (f"on {device}", f"{type(exc).__name__}: {_first_line(exc)}"))
        meta = [e for e in errors[:-1] if e.split(": ", 1)[1] != own]
        text = (f"could not run {type(model).__name__}'s forward on the batch given as inputs= ({{{tried[0]}}}): "
                f"{where} it raised {own}" + (f" (and {meta[0]})" if meta else "") + ". ")
        named = ""
    else:
        text = (f"could not run {type(model).__name__}'s forward to read its dataflow. Tried {kind}: "
                + "; ".join(f"{{{t}}}" for t in tried) + f". The model raised: {'; '.join(shown)}. ")
        left_out = inputs_left_out(model, [b for b, _ in failures])
        named = ("; inputs its forward declares that no dummy batch held: "
                 + ", ".join(f"`{n}`" for n in left_out[:8]) + (" …" if len(left_out) > 8 else "")
                 if left_out else "")
    error = GammaAnalysisError(
        text + tries.not_copied + "Pass `inputs=` to classify_gammas with one tiny batch the model accepts (e.g. the "
        f"dict your data collator produces{named}), or a precomputed `gamma_report=` to the Trainer.")
    error.tried, error.errors = tried, errors
    return error


def _record_copy(model: nn.Module, run_model: nn.Module, batch, device) -> Trace:
    """The recorded forward of the meta copy ``run_model``; never the real ``model``'s.

    A forward set on an instance can still reach the original through something the copy shares with it (a
    closure over a container, a global): the guard stops it at the first touch, and the pass is run again through
    each class's own forward. Where even that reaches the original, `ForeignForward` names what was patched.
    """
    try:
        return record_forward(run_model, batch, device, original=model)
    except ForeignForward as exc:
        patched = instance_forwards(run_model)
        if not patched:
            raise ForeignForward(f"{exc}; no forward is set on a module instance, so the reference is elsewhere "
                                 "(a hook, a module attribute)") from None
        logger.info("hf_gammareg: the forward of the meta copy of %s reached the original model (%s): %s; the roles "
                    "are read through the class's own forward on the copy", type(model).__name__, exc,
                    "; ".join(str(p) for p in patched))
        use_class_forwards(run_model)
    try:
        return record_forward(run_model, batch, device, original=model)
    except ForeignForward as exc:
        raise ForeignForward(f"{exc}, even through the class's own forward; patched: "
                             + "; ".join(str(p) for p in patched)) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300].rstrip(".") if text else ""


def _warn_unused(model: nn.Module, report: GammaReport, unreached: list[str], sink_name: str = "",
                 ran: frozenset = frozenset()) -> None:
    """One warning when a pass leaves γ without a role: which modules it did not reach, and the remedy.

    On dummy inputs, ``unreached`` are the norms the pass never called. On a real batch they are those too, and,
    when the model returned no loss, the norms that ran (``ran``) but that the output read instead (``sink_name``)
    does not depend on: a model whose first output skips most of the network."""
    groups: dict[str, int] = defaultdict(int)
    for name in unreached:
        parts = name.split(".")[:-2] or name.split(".")[:1]  # the norm's owner, less the norm itself
        groups[".".join(parts[:3])] += 1
    shown = ", ".join(f"`{m}` ({n})" for m, n in list(groups.items())[:4]) + (
        f" and {len(groups) - 4} more" if len(groups) > 4 else "")
    shapes = ", ".join(f"{k} {v}" for k, v in report.inputs_shapes.items())
    if report.inputs_source == "dummy":
        where, remedy = f"dummy inputs ({shapes})", (
            "Read the roles from a real batch that reaches those modules: classify_gammas(model, inputs=batch), or "
            "GammaRegTrainer with its train_dataset (it does so itself).")
    elif any(n in ran for n in unreached):
        where, remedy = f"the batch given ({shapes}) as far as its output `{sink_name}` shows", (
            f"The model returned no loss, so the roles were read from its first output `{sink_name}`, which does not "
            "depend on them. Include the labels in the batch so that it returns the loss it trains on, or pass a "
            "batch whose first output depends on those modules (classify_gammas(model, inputs=batch), "
            "GammaRegTrainer(..., gamma_inputs=batch)).")
    else:
        where, remedy = f"the batch given ({shapes})", (
            "Pass a batch that reaches those modules: classify_gammas(model, inputs=batch), or "
            "GammaRegTrainer(..., gamma_inputs=batch).")
    warnings.warn(
        f"{type(model).__name__}: {len(unreached)} of {len(report.gammas)} γ did not take part in the forward on "
        f"{where}, so they get no role and follow hf-default: under {shown}. {remedy}",
        stacklevel=5)


def _finish(report: GammaReport, model, run_model, trace: Trace, invariance, device) -> GammaReport:
    """Read every γ's role from the recorded forward: find the γ and where their signals start, then propagate."""
    names = {id(p): n for n, p in run_model.named_parameters()}
    graph = Graph(trace.sink, set(names), trace.data_seeds, trace.float_input_ids, trace.view_writes)
    modules = dict(run_model.named_modules())
    normalizing = _normalizing_modules(graph, trace, modules)
    sources, outside, never_called = _gamma_sources(report, graph, trace, modules, names, normalizing)
    _add_layer_scales(report, graph, modules, names, normalizing, run_model, sources)
    _assign_roles(report, graph, trace, modules, names, normalizing, sources, outside, run_model, invariance)
    # docs/design.md "Offset scales": the role is the scaled signal's, as for any γ; the report adds the offset c.
    params = dict(run_model.named_parameters())
    report.offsets = offset_scales(graph, {n: params[n] for n in report.roles}, trace.constants)
    return _complete(report, model, device, never_called, trace.sink_name)


def _normalizing_modules(graph: Graph, trace: Trace, modules: dict) -> set[str]:
    """The candidate modules that normalize, judged by what each call computed itself."""
    ops = own_ops(graph, trace.calls)
    found = {call.name for call, own in zip(trace.calls, ops)
             if call.candidate and (is_torch_norm(modules[call.name]) or normalizes(own))}
    # A module that leaves the statistic to a parameter-free norm of its own and applies its scale to that norm's
    # output is a norm with that scale as γ (Moonshine's streaming LayerNorm: `LayerNorm(elementwise_affine=False)`,
    # then `· (gamma + unit_offset)`).
    bare = {name.rpartition(".")[0] for name in found if norm_gamma(modules[name]) is None}
    found |= {call.name for call, own in zip(trace.calls, ops)
              if call.candidate and call.name in bare and "Mul" in own and norm_gamma(modules[call.name]) is not None}
    return found


def _gamma_sources(report: GammaReport, graph: Graph, trace: Trace, modules: dict, names: dict,
                   normalizing: set[str]) -> tuple[dict[str, list], set[str], set[str]]:
    """``(sources, outside, never_called)``: each γ's output nodes (where its signal starts), the γ used only with
    autograd off, and the γ of norms never called. Fills ``report.norm_types`` for every γ found."""
    sources: dict[str, list] = defaultdict(list)
    outside: set[str] = set()
    for call in trace.calls:
        module = modules[call.name]
        gamma = norm_gamma(module)
        if gamma is None or id(gamma) not in names:
            continue
        name = names[id(gamma)]
        node = call.node
        if call.name in normalizing and node is not None and node in graph.inputs and node not in graph.leaf_var:
            sources[name].append(node)
            report.norm_types.setdefault(name, type(module).__name__)
        elif (not call.grad_enabled or node is None) and (is_torch_norm(module) or is_norm_module(module)):
            outside.add(name)
            report.norm_types.setdefault(name, type(module).__name__)
        elif (node is None or node not in graph.inputs) and (is_torch_norm(module) or is_norm_module(module)):
            # Called, but its output never reaches the loss (a pooled output the head does not read): a γ that
            # takes no part in the loss, listed as unused rather than left out of the report.
            report.norm_types.setdefault(name, type(module).__name__)
    # Norms that were never called: still γ (decayed as hf-default decides), reported as unused.
    called = {c.name for c in trace.calls}
    never_called: set[str] = set()
    for module_name, module in modules.items():
        gamma = norm_gamma(module)
        if gamma is not None and id(gamma) in names and is_norm_module(module) and module_name not in called:
            report.norm_types.setdefault(names[id(gamma)], type(module).__name__)
            never_called.add(names[id(gamma)])
    return sources, outside, never_called


def _add_layer_scales(report: GammaReport, graph: Graph, modules: dict, names: dict, normalizing: set[str],
                      run_model, sources: dict[str, list]) -> None:
    """Layer scales: per-channel scales at the end of residual branches, γ-like by the same rules."""
    norm_params = {id(norm_gamma(modules[n])) for n in normalizing if norm_gamma(modules[n]) is not None}
    candidates = {i: n for i, n in names.items() if i not in norm_params and n not in report.norm_types}
    for name, node in graph.layer_scales(candidates).items():
        owner = modules.get(name.rpartition(".")[0], run_model)
        report.norm_types[name] = f"layer scale ({type(owner).__name__})"
        sources[name].append(node)


def _assign_roles(report: GammaReport, graph: Graph, trace: Trace, modules: dict, names: dict, normalizing: set[str],
                  sources: dict[str, list], outside: set[str], run_model, invariance: str) -> None:
    """Propagate each γ's signal and record its role; a γ without a start node is untracked or unused."""
    # Renormalization stops: the norms found, plus parameter-free leaves named like norms (they have no γ
    # but still renormalize what enters them).
    stops = [(c, c.name in normalizing or (c.candidate and norm_gamma(modules[c.name]) is None
                                           and is_norm_module(modules[c.name]))) for c in trace.calls]
    used = {names.get(id(v)) for v in graph.leaf_var.values()}
    order = [n for n, _ in run_model.named_parameters()]
    report.norm_types = {n: report.norm_types[n] for n in order if n in report.norm_types}
    propagation = Propagation(graph, stops, invariance, trace.sink_name)
    for name in report.norm_types:
        if sources.get(name) and name in used:
            report.roles[name], report.reasons[name] = propagation.classify(sources[name])
        elif name in outside and name not in used:
            report.untracked.append(name)
            report.reasons[name] = _OUTSIDE_AUTOGRAD
        else:
            report.unused.append(name)


def _complete(report: GammaReport, model, device, never_called: set[str], sink_name: str = "") -> GammaReport:
    """Sizes and the device; the warnings a user must see."""
    params = dict(model.named_parameters())
    report.numel = {n: getattr(params[n], "ds_numel", params[n].numel()) for n in report.norm_types if n in params}
    report.device = str(device)
    if not report.norm_types:
        return _no_gammas(model, report)
    # Only norms the dummy pass never reached: one that ran but feeds no output the loss reads (a pooled output)
    # stays unused on any batch.
    unreached = [n for n in report.unused if n in never_called]
    if report.inputs_source != "dummy" and sink_name != "loss":
        # A real batch, and no loss returned: a norm that ran but that the first output does not depend on would
        # be in the loss the model trains on; it is unused only as far as this output shows.
        ran = frozenset(n for n in report.unused if n not in never_called)
        unreached = list(report.unused)
    else:
        ran = frozenset()
    if unreached:
        _warn_unused(model, report, unreached, sink_name, ran)
    if report.untracked:
        shown = ", ".join(f"`{n}`" for n in report.untracked[:4]) + (
            f" and {len(report.untracked) - 4} more" if len(report.untracked) > 4 else "")
        warnings.warn(f"{type(model).__name__}: {len(report.untracked)} γ ({shown}) are {_OUTSIDE_AUTOGRAD}.",
                      stacklevel=4)  # one sentence per model, however many γ
    return report


def classify_gammas(model: "nn.Module", inputs=None, *, invariance: str = "exact") -> "GammaReport":
    """Assign every normalization scale γ of ``model`` one of the roles in ``ROLES`` (what a policy then decays is
    :func:`hf_gammareg.decision.decide`'s, with the HF rule the caller reads from the model).

    Args:
        model: any ``nn.Module``; Hugging Face models get dummy inputs from their config.
        inputs: one tiny batch for the forward pass: a dict of keyword tensors, a tuple of positional
            ones, or a tensor. ``None`` builds dummy inputs.
        invariance: ``"exact"`` (a signal scales with γ only through positively homogeneous ops) or
            ``"approximate"`` (every op passes the scale on). See docs/design.md § Invariance modes.

    The roles are read by `hf_gammareg.analysis.read_roles` from one forward pass — on a ``meta`` copy of the
    model whenever it can, else on the model itself with its weights, modes, ``requires_grad`` flags and RNG
    left as they were. The report records which batch the pass ran on (``inputs_source``, ``inputs_shapes``);
    γ a dummy pass does not reach get no role and one warning naming their modules; when no batch runs, the
    `GammaAnalysisError` names each batch tried, the model's own exception, and the remedies.
    """
    return read_roles(model, inputs, invariance=invariance)
