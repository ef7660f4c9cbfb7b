"""`GammaReport`: the role of every γ of a model, with reasons, counts, JSON and where the roles were read from.

A report holds what the analysis read — no policy and no answer of one, nor what `transformers.Trainer`'s rule
decays (that is the caller's, from the model: :mod:`hf_gammareg.hf_rule`). Which γ get decay is decided above it,
by :func:`hf_gammareg.decision.decide`.

Layering: below the analysis (which builds reports) and the decision (which reads them); it imports only the
vocabulary (tests/test_layering.py). The policy methods of 0.1 (``decay_names``, ``decisions``, ``to_table(policy)``,
``summary(policy)``) are attached to this class, deprecated, by :mod:`hf_gammareg.decision` for one release.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .roles import ROLES, offset_form, offset_reason
from .tables import text_table

# The reason given for a γ without a role (it took no part in the recorded forward pass).
NO_ROLE_REASON = "does not take part in the forward pass"
# The key under which reports before 0.2 recorded the γ transformers.Trainer's rule decays (no longer a field).
LEGACY_HF_DEFAULT = "hf_default"


@dataclasses.dataclass
class GammaReport:
    """The role of every γ of a model, with a one-line reason each.

    Attributes:
        roles: ``{parameter name: role}``, names exactly as ``model.named_parameters()`` gives them,
            roles in ``ROLES``. Only γ that take part in the forward pass have a role.
        reasons: ``{parameter name: one-line explanation}``.
        norm_types: ``{parameter name: class name of the norm module}`` for every γ, in parameter order
            (``"layer scale (<module class>)"`` for a layer-scale parameter).
        numel: ``{parameter name: number of elements}``.
        unused: γ that did not take part in the forward pass (no role; decayed as HF would).
        untracked: γ used in the forward only with autograd off (``no_grad``, custom autograd Functions such
            as reversible layers): no role can be read; decayed as HF would, with a warning and a reason.
        invariance: the invariance mode used (``exact`` or ``approximate``).
        model_class: class name of the analysed model.
        device: where the analysis pass ran (``meta`` or the model's device).
        inputs_source: where the batch of that pass came from: ``"dummy"`` (built from the config and the
            forward's signature), ``"training batch"`` (the first batch of the Trainer's training data,
            collated as training collates it) or ``"user inputs"`` (``inputs=``); ``""`` in reports written
            before it was recorded.
        inputs_shapes: ``{input name: shape}`` of the tensors in that batch (positional inputs by index).
        offsets: ``{parameter name: c}`` for the γ applied as ``c + w`` (Gemma's ``x̂ · (1 + w)``, Nemotron's
            ``LayerNorm1P``): weight decay pulls their scale toward ``c``, not 0, so ``guidelines`` does not decay
            them (docs/design.md § Offset scales). Their role is read as for any γ. Empty in reports written
            before it was recorded.
    """

    roles: dict[str, str]
    reasons: dict[str, str]
    norm_types: dict[str, str]
    numel: dict[str, int] = dataclasses.field(default_factory=dict)
    unused: list[str] = dataclasses.field(default_factory=list)
    untracked: list[str] = dataclasses.field(default_factory=list)
    invariance: str = "exact"
    model_class: str = ""
    device: str = "meta"
    inputs_source: str = ""
    inputs_shapes: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    offsets: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def gammas(self) -> list[str]:
        """All γ names: classified, then untracked, then unused."""
        return list(self.roles) + list(self.untracked) + list(self.unused)

    def inputs_line(self) -> str:
        """One sentence: which batch the roles were read from (for tables, logs and the model card)."""
        shapes = ", ".join(f"{k} {list(v)}" for k, v in self.inputs_shapes.items())
        shapes = f" ({shapes})" if shapes else ""
        if self.inputs_source == "training batch":
            return f"Roles read from the first batch of the training data, collated as training collates it{shapes}."
        if self.inputs_source == "user inputs":
            return f"Roles read from the batch passed as inputs={shapes}."
        if self.inputs_source == "dummy":
            return f"Roles read from dummy inputs built from the model's config{shapes}."
        return "Roles read from inputs this report does not record (written before hf_gammareg recorded them)."

    def role_of(self, name: str) -> str:
        """``name``'s role, or ``"untracked"`` / ``"unused"`` for a γ without one."""
        if name in self.roles:
            return self.roles[name]
        return "untracked" if name in self.untracked else "unused"

    def reason_of(self, name: str) -> str:
        """The one-line reason for ``name``'s role (for a γ without one, that it took no part in the pass); an
        offset scale's begins with what weight decay does to it (:func:`offset_reason`)."""
        reason = self.reasons.get(name, NO_ROLE_REASON)
        return f"{offset_reason(self.offsets[name])}; {reason}" if name in self.offsets else reason

    def counts(self) -> dict[str, tuple[int, int]]:
        """``{role: (number of γ, total numel)}`` including ``untracked`` and ``unused``."""
        out: dict[str, tuple[int, int]] = {}
        rows = (list(self.roles.items()) + [(n, "untracked") for n in self.untracked]
                + [(n, "unused") for n in self.unused])
        for name, role in rows:
            count, numel = out.get(role, (0, 0))
            out[role] = (count + 1, numel + self.numel.get(name, 0))
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "GammaReport":
        """The report ``to_json`` wrote (or one of an earlier release: its ``hf_default`` key is read and dropped);
        ``ValueError`` for an unknown field, a role outside ``ROLES`` or an offset that is not a number."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("GammaReport JSON must be an object")
        # Reports written before 0.2 recorded what transformers.Trainer's rule decays; every caller that reads one
        # (the Trainer's gamma_report=, a loop's report=) has the model and applies the rule itself.
        data.pop(LEGACY_HF_DEFAULT, None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"GammaReport JSON has unknown fields {sorted(unknown)}")
        report = cls(**data)
        bad = {n: r for n, r in report.roles.items() if r not in ROLES}
        if bad:
            raise ValueError(f"GammaReport JSON has roles outside {ROLES}: {bad}")
        odd = {n: c for n, c in report.offsets.items()
               if n not in report.roles or isinstance(c, bool) or not isinstance(c, (int, float))}
        if odd:
            raise ValueError(f"GammaReport JSON has offsets that are not a number for a classified γ: {odd}")
        return report

    def to_table(self) -> str:
        """Plain-text table, one row per γ: name, norm type, role, reason (what a policy decays:
        :func:`hf_gammareg.decision.decision_table`)."""
        rows = [(n, self.norm_types.get(n, "?"), self.role_of(n), self.reason_of(n)) for n in self.gammas]
        return "\n".join(text_table(("parameter", "norm", "role", "reason"), rows))

    def summary(self) -> str:
        """One line: how many γ, their count and numel per role, the offset scales among them."""
        parts = [f"{role}: {c} ({n:,} values)" for role, (c, n) in sorted(self.counts().items())]
        offsets = f"; {len(self.offsets)} offset scale(s) {offset_form(self.offsets.values())}" if self.offsets else ""
        return f"{len(self.gammas)} γ in {self.model_class or 'model'} [{', '.join(parts)}]{offsets}"
