"""hf_gammareg: decide, γ by γ, which normalization scales get weight decay (Kim et al., arXiv:2205.07260)."""

__version__ = "0.1.0"

from .config import (
    CONFIG_NAME,
    GammaRegArgumentsMixin,
    GammaRegConfig,
    GammaRegSeq2SeqTrainingArguments,
    GammaRegTrainingArguments,
)
from .policy import NAMED_POLICIES, parse_policy, select_decayed
from .roles import INVARIANCE_MODES, ROLES, GammaAnalysisError, GammaReport, classify_gammas, dummy_inputs, find_gammas
from .trainer import GammaDecayPlan, GammaRegSeq2SeqTrainer, GammaRegTrainer, gamma_decay_plan, unwrap_model

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
    "CONFIG_NAME",
    "GammaRegConfig",
    "GammaRegArgumentsMixin",
    "GammaRegTrainingArguments",
    "GammaRegSeq2SeqTrainingArguments",
    "GammaRegTrainer",
    "GammaRegSeq2SeqTrainer",
    "GammaDecayPlan",
    "gamma_decay_plan",
    "unwrap_model",
]
