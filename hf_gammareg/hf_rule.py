"""transformers.Trainer's rule for which parameters get no weight decay, applied without importing the Trainer.

The bottom of the decision: `hf-default` follows it, and so does every γ without a role. A report does not record
it: each caller of :func:`hf_gammareg.decision.decide` applies it to the model at hand (the plan, the CLI, the
architecture benchmark; `GammaRegTrainer` passes the Trainer's own names instead), and
`benchmarks/architecture_coverage.py` checks on every buildable model type that it agrees with the installed
Trainer's own ``get_decay_parameter_names``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

# transformers.Trainer's name patterns for "no decay" (transformers 5.x `Trainer.get_decay_parameter_names`).
HF_NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


def hf_default_decay_names(model: "nn.Module") -> set[str]:
    """The parameter names ``transformers.Trainer`` decays for ``model``: its rule, without importing the Trainer.

    ``Trainer.get_decay_parameter_names`` is ``get_parameter_names(model, [nn.LayerNorm], <the patterns
    above>)``; this applies the same call through ``trainer_pt_utils`` (the Trainer module costs ~85 MB).
    `GammaRegTrainer` does not use it: it passes the Trainer's own names, so ``hf-default`` there is the
    installed Trainer's split by construction; ``benchmarks/architecture_coverage.py`` checks on every
    buildable model type that the two agree.
    """
    from torch import nn
    from transformers.trainer_pt_utils import get_parameter_names

    return set(get_parameter_names(model, [nn.LayerNorm], HF_NO_DECAY_PATTERNS))
