"""Policies map roles to decayed γ (docs/design.md § Policies)."""

import pytest

from hf_gammareg import GammaReport
from hf_gammareg.policy import parse_policy, select_decayed

REPORT = GammaReport(
    roles={"a.weight": "branch", "b.weight": "invariant", "c.weight": "stream", "d.weight": "head"},
    reasons={}, norm_types={}, unused=["e.weight"],
)
HF = {"c.weight", "e.weight"}  # what transformers.Trainer's rule decays here: the caller's, from the model


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
    assert select_decayed(REPORT, policy, hf_decayed=HF) == expected


def test_include_and_exclude_override_roles():
    assert (select_decayed(REPORT, "guidelines", include=[r"^d\."], exclude=[r"^a\."], hf_decayed=HF)
            == {"b.weight", "d.weight", "e.weight"})
    assert (select_decayed(REPORT, "all", include=["c"], exclude=["c"], hf_decayed=HF)
            == {"a.weight", "b.weight", "d.weight", "e.weight"})


def test_the_hf_rule_is_asked_for_where_a_decision_needs_it():
    """A report holds no HF names: a γ without a role, or `hf-default`, needs them from the caller."""
    roles_only = GammaReport(roles={"a.weight": "branch", "d.weight": "head"}, reasons={}, norm_types={})
    assert select_decayed(roles_only, "guidelines") == {"a.weight"}  # every γ has a role: no HF rule needed
    for report, policy in ((REPORT, "guidelines"), (roles_only, "hf-default")):
        with pytest.raises(ValueError, match="hf_decayed=hf_default_decay_names"):
            select_decayed(report, policy)


@pytest.mark.parametrize("bad", ["guideline", "only:trunk", "branch,bogus", "", "only:"])
def test_unknown_policy_names_the_choices(bad):
    with pytest.raises(ValueError, match="guidelines"):
        parse_policy(bad)


def test_invalid_regex_names_the_field():
    with pytest.raises(ValueError, match=r"gamma_include: invalid regular expression '\(unclosed'"):
        select_decayed(REPORT, "guidelines", include=["(unclosed"], hf_decayed=HF)


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


def test_a_policy_is_one_table_entry(monkeypatch, tmp_path, capsys):
    """Registered at runtime, a policy is valid in the config, listed in the CLI's help, and used by the Trainer."""
    from models import tiny_gpt2

    from hf_gammareg import GammaRegTrainer, GammaRegTrainingArguments
    from hf_gammareg import policy as policy_module
    from hf_gammareg.cli import main as cli_main

    monkeypatch.setattr(policy_module, "POLICIES", dict(policy_module.POLICIES))
    policy_module.register_policy(policy_module.Policy("head_only_test", "decay the head γ only",
                                                       roles=frozenset({"head"})))
    with pytest.raises(SystemExit):
        cli_main(["inspect", "--help"])
    assert "'head_only_test' (decay the head γ only)" in " ".join(capsys.readouterr().out.split())  # argparse wraps
    args = GammaRegTrainingArguments(output_dir=str(tmp_path), gamma_policy="head_only_test", weight_decay=0.1,
                                     use_cpu=True, report_to="none")
    trainer = GammaRegTrainer(model=tiny_gpt2(), args=args)
    trainer.create_optimizer()
    decay = {n: g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]
             for n, q in trainer.model.named_parameters() if q is p and n.endswith(("ln_1.weight", "ln_2.weight",
                                                                                    "ln_f.weight"))}
    # GPT-2 (docs/design.md § Reference classifications): ln_1/ln_2 are branch, ln_f is head.
    assert decay == {**{f"transformer.h.{i}.{n}.weight": 0.0 for i in (0, 1) for n in ("ln_1", "ln_2")},
                     "transformer.ln_f.weight": 0.1}
    with pytest.raises(ValueError, match="a name that is not a role"):
        policy_module.register_policy(policy_module.Policy("branch"))
