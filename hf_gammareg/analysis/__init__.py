"""The dataflow analysis, model → roles, as a pipeline:

* :mod:`.norms` — which modules normalize, and which parameter is each one's γ;
* :mod:`.inputs` — one tiny batch of dummy inputs, from the model's config and signature;
* :mod:`.trace` — the recorded forward pass on a meta-device copy (module spans, meta kernels);
* :mod:`.graph` — the autograd graph and the per-γ propagation that decides each role;
* :mod:`.classify` — :func:`read_roles`, which ties them together into a :class:`~hf_gammareg.report.GammaReport`,
  and :func:`classify_gammas`, its public name.

It knows nothing of policies, the HF rule or the Trainer: which γ get decay is decided above it
(:mod:`hf_gammareg.decision`).
"""

from .classify import classify_gammas, read_roles
from .inputs import dummy_inputs
from .norms import find_gammas, is_norm_module, norm_gamma

__all__ = ["classify_gammas", "read_roles", "dummy_inputs", "find_gammas", "is_norm_module", "norm_gamma"]
