"""The vocabulary of the analysis: the four γ roles and the two invariance modes
(docs/design.md § Roles, read from the dataflow).

* ``branch``: the γ's signal first meets an independent signal at an addition on the branch side
  (the last norm of a residual branch; pre-LN blocks' norms) — regularize (variance control).
* ``invariant``: every path out of the γ is renormalized — regularize (effective learning rate).
* ``stream``: it first meets an independent signal on the stream side (stem, shortcut and post-LN
  norms) — do not regularize.
* ``head``: it reaches the loss without meeting one (the final norm) — do not regularize.

The analysis that assigns them is :mod:`hf_gammareg.analysis` and :mod:`hf_gammareg.report` holds the result;
:mod:`hf_gammareg.policy` names the policies and :mod:`hf_gammareg.decision` turns roles into decisions.
"""

from __future__ import annotations

from collections.abc import Iterable

ROLES = ("branch", "invariant", "stream", "head")
INVARIANCE_MODES = ("exact", "approximate")


class GammaAnalysisError(RuntimeError):
    """The model's forward pass could not be run or read for γ classification."""


# Offset scales c + w (docs/design.md § Offset scales): the words every table, horizon line and card uses for them.
def offset_form(offsets: Iterable[float]) -> str:
    """How the scale of offset γ reads: ``"1 + w"`` when they share one offset, ``"c + w"`` otherwise."""
    values = set(offsets)
    return f"{values.pop():g} + w" if len(values) == 1 else "c + w"


def offset_toward(offsets: Iterable[float]) -> str:
    """Where weight decay pulls their scale: ``"1"``, or ``"their c"`` for several offsets."""
    values = set(offsets)
    return f"{values.pop():g}" if len(values) == 1 else "their c"


def offset_reason(c: float) -> str:
    """What weight decay does to an offset scale ``c + w``: the reason ``guidelines`` does not decay it."""
    return f"offset scale {c:g} + w: weight decay pulls the scale toward {c:g}, not 0"
