"""Policies map roles to decayed γ (docs/design.md § Policies)."""

import pytest

from hf_gammareg import GammaReport, parse_policy, select_decayed

REPORT = GammaReport(
    roles={"a.weight": "branch", "b.weight": "invariant", "c.weight": "stream", "d.weight": "head"},
    reasons={}, norm_types={}, unused=["e.weight"], hf_default=["c.weight", "e.weight"],
)


@pytest.mark.parametrize(
    "policy,expected",
    [
        ("guidelines", {"a.weight", "b.weight"}),
        ("hf-default", {"c.weight", "e.weight"}),
        ("all", {"a.weight", "b.weight", "c.weight", "d.weight", "e.weight"}),
        ("none", set()),
        ("branch,invariant", {"a.weight", "b.weight", "e.weight"}),
        ("only:stream", {"c.weight", "e.weight"}),
        ("only:head", {"d.weight", "e.weight"}),
        ("head, stream", {"c.weight", "d.weight", "e.weight"}),
    ],
)
def test_policies(policy, expected):
    # `e.weight` is unused: it follows hf-default (HF decays it here) under role-based policies.
    if policy == "guidelines":
        expected = expected | {"e.weight"}
    assert select_decayed(REPORT, policy) == expected


def test_include_and_exclude_override_roles():
    assert (REPORT.decay_names("guidelines", include=[r"^d\."], exclude=[r"^a\."])
            == {"b.weight", "d.weight", "e.weight"})
    assert REPORT.decay_names("all", include=["c"], exclude=["c"]) == {"a.weight", "b.weight", "d.weight", "e.weight"}


@pytest.mark.parametrize("bad", ["guideline", "only:trunk", "branch,bogus", "", "only:"])
def test_unknown_policy_names_the_choices(bad):
    with pytest.raises(ValueError, match="guidelines"):
        parse_policy(bad)


def test_invalid_regex_names_the_field():
    with pytest.raises(ValueError, match=r"gamma_include: invalid regular expression '\(unclosed'"):
        REPORT.decay_names("guidelines", include=["(unclosed"])


def test_a_pattern_string_is_one_regex_everywhere():
    """`h\\.{1,3}` is one regex: the config, the plan and the Trainer keep it whole and decay what it matches."""
    from models import tiny_gpt2

    from hf_gammareg import GammaRegConfig, GammaRegTrainingArguments, decay_plan

    pattern = r"h\.{1,3}0\.ln_1"
    assert GammaRegConfig(include=pattern).include == [pattern]
    assert GammaRegConfig(include=[pattern, "ln_f"]).include == [pattern, "ln_f"]
    assert GammaRegTrainingArguments(output_dir="x", gamma_include=[pattern]).gamma_config.include == [pattern]
    plan = decay_plan(tiny_gpt2(), 0.1, policy="none", include=pattern)
    # By hand: only transformer.h.0.ln_1.weight matches `h` + 1-3 dots + `0.ln_1`
    assert plan.decayed == {"transformer.h.0.ln_1.weight"}
    assert plan.config.include == [pattern]
    with pytest.raises(ValueError, match="include: expected a regular expression or a list"):
        GammaRegConfig(include=3)


def test_classify_gammas_at_its_old_path_warns_and_is_the_same_function():
    import hf_gammareg.policy as policy
    from hf_gammareg import classify_gammas

    with pytest.warns(DeprecationWarning, match="moved to hf_gammareg.classify_gammas"):
        moved = policy.classify_gammas
    assert moved is classify_gammas
