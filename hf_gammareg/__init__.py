"""hf_gammareg: decide, γ by γ, which normalization scales get weight decay (Kim et al., arXiv:2205.07260).

The analysis (`classify_gammas`, `GammaReport`), the policies and the decision (`hf_gammareg.decision.decide`)
load fast; the rest is loaded on first use, so `hf-gammareg inspect` starts in the time torch takes to import:
`param_groups` (and `decay_plan`, `l2_penalty`) for any `torch.optim` optimizer and training loop,
`decay_horizon` (what weight decay alone does to a parameter over a run, from the optimizer and scheduler), and
the Trainer-side names (`GammaRegTrainer`, `GammaRegMixin` for any other `Trainer` subclass, the
TrainingArguments subclasses, `GammaNormCallback`), which import `transformers.Trainer`.
"""

import importlib
import warnings

__version__ = "0.1.0"

from . import decision  # noqa: F401  (also attaches GammaReport's deprecated policy methods of 0.1)
from .analysis import classify_gammas
from .report import GammaReport
from .roles import ROLES, GammaAnalysisError

# What a user calls, loaded on first use (the Trainer-side names import transformers.Trainer).
_LAZY = {
    "GammaRegConfig": "config",
    "GammaConfigError": "config",
    "GammaRegArgumentsMixin": "training_args",
    "GammaRegTrainingArguments": "training_args",
    "GammaRegSeq2SeqTrainingArguments": "training_args",
    "GammaRegMixin": "trainer",
    "GammaRegTrainer": "trainer",
    "GammaRegSeq2SeqTrainer": "trainer",
    "param_groups": "plan",
    "decay_plan": "plan",
    "l2_penalty": "plan",
    "decay_horizon": "horizon",
    "GammaNormCallback": "callbacks",
}
# Exported here before 0.2; they stay importable from their modules, and from here for one release with a
# DeprecationWarning that names the module.
_MOVED = {
    "INVARIANCE_MODES": "roles",
    "NAMED_POLICIES": "policy",
    "parse_policy": "policy",
    "select_decayed": "policy",
    "dummy_inputs": "analysis",
    "find_gammas": "analysis",
    "CONFIG_NAME": "config",
    "GammaDecayPlan": "plan",
    "gamma_decay_plan": "plan",
    "unwrap_model": "wrappers",
    "planned_decay_horizon": "horizon",
    "GroupHorizon": "horizon",
    "gamma_norm_stats": "callbacks",
    "plot_history": "callbacks",
}

__all__ = [
    "__version__",
    "ROLES",
    "GammaAnalysisError",
    "GammaReport",
    "classify_gammas",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _MOVED:
        module = f"{__name__}.{_MOVED[name]}"
        warnings.warn(f"hf_gammareg.{name} is deprecated: import it from {module} (the package exports only what "
                      "a training script calls); this alias goes in the next release", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'hf_gammareg' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
