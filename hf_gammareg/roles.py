"""The vocabulary of the analysis: the four γ roles and the two invariance modes
(docs/design.md § Roles, read from the dataflow).

* ``branch``: the γ's signal first meets an independent signal at an addition on the branch side
  (the last norm of a residual branch; pre-LN blocks' norms) — regularize (variance control).
* ``invariant``: every path out of the γ is renormalized — regularize (effective learning rate).
* ``stream``: it first meets an independent signal on the stream side (stem, shortcut and post-LN
  norms) — do not regularize.
* ``head``: it reaches the loss without meeting one (the final norm) — do not regularize.

The analysis that assigns them is :mod:`hf_gammareg.analysis`; :mod:`hf_gammareg.policy` turns roles
into decisions; :mod:`hf_gammareg.report` holds the result.
"""

from __future__ import annotations

ROLES = ("branch", "invariant", "stream", "head")
INVARIANCE_MODES = ("exact", "approximate")


class GammaAnalysisError(RuntimeError):
    """The model's forward pass could not be run or read for γ classification."""
