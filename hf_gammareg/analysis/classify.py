"""`classify_gammas`: find the γ, run one recorded forward (on meta where possible), read each γ's role."""

from __future__ import annotations

import gc
import logging
import warnings
from collections import defaultdict

import torch
from torch import nn

from ..policy import hf_default_decay_names
from ..report import GammaReport
from ..roles import INVARIANCE_MODES, GammaAnalysisError
from .graph import _Analysis, _Graph
from .inputs import dummy_inputs
from .norms import find_gammas, norm_gamma
from .trace import _meta_copy, _model_device, _Recorder, _run, _TemporaryAnalysisState

logger = logging.getLogger(__name__)


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

