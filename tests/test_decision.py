"""The decision layer: `decide(report, config, hf_decayed)` → typed rows, rendered at the edge; the report's policy
methods of 0.1 deprecated. Expected rows and tables are written by hand from docs/design.md § Policies."""

import json
import warnings

import pytest
from models import tiny_gpt2

from hf_gammareg import GammaRegConfig, GammaReport, classify_gammas, decay_plan
from hf_gammareg.decision import GammaDecision, decide, decision_summary, decision_table
from hf_gammareg.hf_rule import hf_default_decay_names

# A hand-made report: a ResNet-like stem, block and head, one offset scale (Gemma's 1 + w) and one BatchNorm the
# forward never reached.
REPORT = GammaReport(
    roles={"stem.bn.weight": "stream", "block.bn1.weight": "invariant", "block.bn2.weight": "branch",
           "norm.weight": "head", "gnorm.weight": "branch"},
    reasons={"stem.bn.weight": "on the stream", "block.bn1.weight": "renormalized",
             "block.bn2.weight": "ends a branch", "norm.weight": "reaches the output",
             "gnorm.weight": "ends a branch"},
    norm_types={"stem.bn.weight": "BatchNorm2d", "block.bn1.weight": "BatchNorm2d", "block.bn2.weight": "BatchNorm2d",
                "norm.weight": "LayerNorm", "gnorm.weight": "GemmaRMSNorm", "extra.bn.weight": "BatchNorm2d"},
    numel={"stem.bn.weight": 16, "block.bn1.weight": 16, "block.bn2.weight": 16, "norm.weight": 32,
           "gnorm.weight": 32, "extra.bn.weight": 8},
    unused=["extra.bn.weight"],
    model_class="TinyNet",
    offsets={"gnorm.weight": 1.0},
)
# What transformers.Trainer's rule decays among them: the BatchNorms (its name patterns miss them), not the norms
# whose names say "norm".
HF = {"stem.bn.weight", "block.bn1.weight", "block.bn2.weight", "extra.bn.weight"}
OFFSET_REASON = "offset scale 1 + w: weight decay pulls the scale toward 1, not 0; ends a branch"


def rows(decisions) -> dict[str, tuple[bool, str]]:
    return {d.name: (d.decayed, d.by) for d in decisions}


@pytest.mark.parametrize("policy,expected", [
    # guidelines: branch and invariant, the offset scale excepted; the unused γ follows the HF rule
    ("guidelines", {"stem.bn.weight": (False, "role"), "block.bn1.weight": (True, "role"),
                    "block.bn2.weight": (True, "role"), "norm.weight": (False, "role"),
                    "gnorm.weight": (False, "offset scale"), "extra.bn.weight": (True, "hf rule")}),
    ("hf-default", {"stem.bn.weight": (True, "hf rule"), "block.bn1.weight": (True, "hf rule"),
                    "block.bn2.weight": (True, "hf rule"), "norm.weight": (False, "hf rule"),
                    "gnorm.weight": (False, "hf rule"), "extra.bn.weight": (True, "hf rule")}),
    ("all", dict.fromkeys(["stem.bn.weight", "block.bn1.weight", "block.bn2.weight", "norm.weight", "gnorm.weight",
                           "extra.bn.weight"], (True, "policy"))),
    ("none", dict.fromkeys(["stem.bn.weight", "block.bn1.weight", "block.bn2.weight", "norm.weight", "gnorm.weight",
                            "extra.bn.weight"], (False, "policy"))),
    # a role list decays the offset scale by its role (only guidelines spares it)
    ("only:branch", {"stem.bn.weight": (False, "role"), "block.bn1.weight": (False, "role"),
                     "block.bn2.weight": (True, "role"), "norm.weight": (False, "role"),
                     "gnorm.weight": (True, "role"), "extra.bn.weight": (True, "hf rule")}),
])
def test_each_policy_row_by_row(policy, expected):
    decisions = decide(REPORT, GammaRegConfig(policy=policy), HF)
    assert rows(decisions) == expected
    assert list(rows(decisions)) == ["stem.bn.weight", "block.bn1.weight", "block.bn2.weight", "norm.weight",
                                     "gnorm.weight", "extra.bn.weight"]  # the report's order: classified, then unused


def test_rows_are_typed_records():
    decisions = decide(REPORT, GammaRegConfig(include=["^norm"], exclude=["bn2"], gamma_weight_decay=0.5), HF,
                       weight_decay=0.1)
    by_name = decisions.by_name()
    assert by_name["norm.weight"] == GammaDecision(
        name="norm.weight", role="head", decayed=True, by="include", coefficient=0.5, reason="reaches the output",
        pattern="^norm", norm="LayerNorm", numel=32, offset=None)
    assert by_name["block.bn2.weight"] == GammaDecision(
        name="block.bn2.weight", role="branch", decayed=False, by="exclude", coefficient=0.0, reason="ends a branch",
        pattern="bn2", norm="BatchNorm2d", numel=16, offset=None)
    assert by_name["gnorm.weight"].offset == 1.0 and by_name["gnorm.weight"].reason == OFFSET_REASON
    assert by_name["extra.bn.weight"].role == "unused"
    assert decisions.decayed == {"block.bn1.weight", "norm.weight", "extra.bn.weight"}
    assert decisions.hf_decayed == frozenset(HF) and decisions.policy == "guidelines" and len(decisions) == 6
    # Without gamma_weight_decay the coefficient is the run's weight decay; unknown (None) when no run is given.
    assert {d.coefficient for d in decide(REPORT, GammaRegConfig(), HF, weight_decay=0.1) if d.decayed} == {0.1}
    assert {d.coefficient for d in decide(REPORT, GammaRegConfig(), HF) if d.decayed} == {None}


def test_table_and_summary_rendered_from_the_rows():
    decisions = decide(REPORT, GammaRegConfig(include=["^norm"], exclude=["bn2"]), HF)
    assert decision_table(decisions).splitlines() == [
        "parameter         norm          role       decay          reason",
        "----------------  ------------  ---------  -------------  ------",
        "stem.bn.weight    BatchNorm2d   stream     no             on the stream",
        "block.bn1.weight  BatchNorm2d   invariant  yes            renormalized",
        "block.bn2.weight  BatchNorm2d   branch     no (exclude)   ends a branch",
        "norm.weight       LayerNorm     head       yes (include)  reaches the output",
        f"gnorm.weight      GemmaRMSNorm  branch     no             {OFFSET_REASON}",
        "extra.bn.weight   BatchNorm2d   unused     yes            does not take part in the forward pass",
    ]
    assert decision_summary(decisions) == (
        "6 γ in TinyNet [branch: 2 (48 values), head: 1 (32 values), invariant: 1 (16 values), stream: 1 (16 values), "
        "unused: 1 (8 values)]; 1 offset scale(s) 1 + w, 0 decayed; policy 'guidelines' decays 3 (56 values)")
    # The report's own table and summary: roles only, no policy.
    assert REPORT.to_table().splitlines()[:3] == [
        "parameter         norm          role       reason",
        "----------------  ------------  ---------  ------",
        "stem.bn.weight    BatchNorm2d   stream     on the stream",
    ]
    assert REPORT.summary() == (
        "6 γ in TinyNet [branch: 2 (48 values), head: 1 (32 values), invariant: 1 (16 values), stream: 1 (16 values), "
        "unused: 1 (8 values)]; 1 offset scale(s) 1 + w")


def test_a_decision_that_needs_the_hf_rule_asks_for_it():
    with pytest.raises(ValueError, match="hf_decayed=hf_default_decay_names"):
        decide(REPORT, GammaRegConfig(), None)  # extra.bn.weight has no role
    classified = GammaReport(roles={"a.weight": "branch"}, reasons={}, norm_types={"a.weight": "LayerNorm"})
    assert decide(classified, GammaRegConfig(), None).decayed == {"a.weight"}
    assert decide(classified, GammaRegConfig(policy="all"), None).hf_decayed is None


def test_tiny_gpt2_under_the_policies():
    """GPT-2 (docs/design.md § Reference classifications): ln_1/ln_2 branch, ln_f head; Trainer decays no LayerNorm."""
    model = tiny_gpt2()
    report = classify_gammas(model)
    blocks = [f"transformer.h.{i}.{n}.weight" for i in (0, 1) for n in ("ln_1", "ln_2")]
    guidelines = decide(report, GammaRegConfig(), hf_default_decay_names(model), weight_decay=0.1)
    assert rows(guidelines) == {**{n: (True, "role") for n in blocks}, "transformer.ln_f.weight": (False, "role")}
    hf = decide(report, GammaRegConfig(policy="hf-default"), hf_default_decay_names(model))
    assert rows(hf) == {n: (False, "hf rule") for n in [*blocks, "transformer.ln_f.weight"]}
    # The plan holds the same decision, and the optimizer groups follow it.
    plan = decay_plan(model, 0.1)
    assert plan.decisions.rows == guidelines.rows and plan.decayed == set(blocks)


# -- the report: no policy, no HF rule; the old JSON still reads ------------------------------------------------------
def test_the_report_holds_no_policy_and_old_json_reads():
    data = json.loads(REPORT.to_json())
    assert "hf_default" not in data
    data["hf_default"] = sorted(HF)  # a report written before 0.2
    old = GammaReport.from_json(json.dumps(data))
    assert old == REPORT


# -- the deprecated API of 0.1 -------------------------------------------------------------------------------------
def deprecated(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = call()
    assert [w.category for w in caught] == [DeprecationWarning], [str(w.message) for w in caught]
    return value, str(caught[0].message)


def test_the_old_report_methods_warn_and_answer_as_decide():
    value, message = deprecated(lambda: REPORT.decay_names("guidelines", hf_decayed=HF))
    assert value == {"block.bn1.weight", "block.bn2.weight", "extra.bn.weight"}
    assert "hf_gammareg.decision.decide(report" in message
    value, _ = deprecated(lambda: REPORT.decisions("all", exclude=["^stem"], hf_decayed=HF))
    assert value == {"stem.bn.weight": "no (exclude)", "block.bn1.weight": "yes", "block.bn2.weight": "yes",
                     "norm.weight": "yes", "gnorm.weight": "yes", "extra.bn.weight": "yes"}
    expected = decide(REPORT, GammaRegConfig(include=["^norm"]), HF)
    value, _ = deprecated(lambda: REPORT.to_table("guidelines", include=["^norm"], hf_decayed=HF))
    assert value == decision_table(expected)
    value, _ = deprecated(lambda: REPORT.summary("guidelines", include=["^norm"], hf_decayed=HF))
    assert value == decision_summary(expected)
    # A report without a γ lacking a role answers as before without the HF names; where they are needed, it says so.
    classified = GammaReport(roles={"a.weight": "branch", "b.weight": "head"}, reasons={}, norm_types={})
    assert deprecated(lambda: classified.decay_names())[0] == {"a.weight"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ValueError, match="hf_decayed="):
            REPORT.decay_names("guidelines")


def test_the_roles_only_table_and_summary_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert REPORT.to_table().splitlines()[0].split() == ["parameter", "norm", "role", "reason"]
        assert REPORT.summary().startswith("6 γ in TinyNet")


def test_gamma_decay_plan_warns_and_returns_the_plan_and_its_report():
    from hf_gammareg.plan import gamma_decay_plan

    model = tiny_gpt2()
    report = classify_gammas(model)
    (plan, again), message = deprecated(lambda: gamma_decay_plan(model, config=GammaRegConfig(), weight_decay=0.1,
                                                                 report=report))
    assert again is report and plan.report is report and "decay_plan(model, weight_decay, config" in message
    assert plan.param_groups(model) == decay_plan(model, 0.1, report=report).param_groups(model)
