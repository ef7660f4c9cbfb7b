"""hf_gammareg: decide, γ by γ, which normalization scales get weight decay (Kim et al., arXiv:2205.07260).

The analysis (`classify_gammas`, `GammaReport`) and the policies load fast; the rest is loaded on first
use, so `hf-gammareg inspect` starts in the time torch takes to import: `param_groups` (and `decay_plan`,
`l2_penalty`) for any `torch.optim` optimizer and training loop, `decay_horizon` (what weight decay alone does
to a parameter over a run, from the optimizer and scheduler), and the Trainer-side names
(`GammaRegTrainer`, `GammaRegMixin` for any other `Trainer` subclass, the TrainingArguments subclasses,
`GammaNormCallback`), which import `transformers.Trainer`.
"""

import importlib

__version__ = "0.1.0"

from .analysis import dummy_inputs, find_gammas
from .policy import NAMED_POLICIES, classify_gammas, parse_policy, select_decayed
from .report import GammaReport
from .roles import INVARIANCE_MODES, ROLES, GammaAnalysisError

_LAZY = {
    "CONFIG_NAME": "config",
    "GammaRegConfig": "config",
    "GammaRegArgumentsMixin": "training_args",
    "GammaRegTrainingArguments": "training_args",
    "GammaRegSeq2SeqTrainingArguments": "training_args",
    "GammaRegMixin": "trainer",
    "GammaRegTrainer": "trainer",
    "GammaRegSeq2SeqTrainer": "trainer",
    "param_groups": "plan",
    "decay_plan": "plan",
    "l2_penalty": "plan",
    "GammaDecayPlan": "plan",
    "gamma_decay_plan": "plan",
    "unwrap_model": "wrappers",
    "decay_horizon": "horizon",
    "planned_decay_horizon": "horizon",
    "GroupHorizon": "horizon",
    "GammaNormCallback": "callbacks",
    "gamma_norm_stats": "callbacks",
    "plot_history": "callbacks",
}

__all__ = [
    "__version__",
    "ROLES",
    "INVARIANCE_MODES",
    "NAMED_POLICIES",
    "GammaAnalysisError",
    "GammaReport",
    "classify_gammas",
    "dummy_inputs",
    "find_gammas",
    "parse_policy",
    "select_decayed",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hf_gammareg' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
