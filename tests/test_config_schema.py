"""GammaRegConfig is the one declaration of every γ option: the TrainingArguments' gamma_* fields, the CLI's
flags, param_groups/decay_plan's keywords and the sweep's flags must follow it (adding a field to the config
without the others fails here), and a bad value names its field without any string parsing."""

import dataclasses
import inspect

import pytest
import torch
from conftest import load_recipe
from models import tiny_bert

from hf_gammareg import GammaRegConfig, GammaRegTrainingArguments, decay_plan, param_groups
from hf_gammareg.cli import make_parser
from hf_gammareg.config import GammaConfigError, argument_name, option_fields, option_help
from hf_gammareg.training_args import GammaRegArgumentsMixin, GammaRegSeq2SeqTrainingArguments

# Written out by hand: the config's fields, and the two Trainer settings that are not part of it.
CONFIG_FIELDS = ["policy", "gamma_weight_decay", "invariance", "include", "exclude", "regularization"]
TRAINER_ONLY = {"gamma_log_norms", "gamma_allow_config_change"}
CLI_FLAGS = {"policy", "invariance", "include", "exclude"}


def test_the_config_declares_the_fields_written_here():
    assert [f.name for f in option_fields()] == CONFIG_FIELDS
    assert all(option_help(f) for f in option_fields())


@pytest.mark.parametrize("cls", [GammaRegArgumentsMixin, GammaRegTrainingArguments, GammaRegSeq2SeqTrainingArguments])
def test_training_arguments_have_one_gamma_field_per_config_field(cls):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    gamma = {name for name in fields if name.startswith("gamma_")}
    assert gamma == {argument_name(f) for f in option_fields()} | TRAINER_ONLY
    for f in option_fields():
        arg = fields[argument_name(f)]
        assert arg.metadata["help"] == option_help(f)
        assert arg.metadata.get("choices") == (list(f.metadata["choices"]) if f.metadata["choices"] else None)
        # A list option is None in the arguments (HfArgumentParser's nargs), [] in the config.
        assert arg.default == (None if f.default is dataclasses.MISSING else f.default)
    assert GammaRegTrainingArguments(output_dir="x").gamma_config == GammaRegConfig()


def test_cli_flags_follow_the_config():
    inspect_parser = next(a for a in make_parser()._actions if hasattr(a, "choices") and a.choices and
                          "inspect" in a.choices).choices["inspect"]
    flags = {a.dest: a for a in inspect_parser._actions}
    declared = {f.name for f in option_fields() if f.metadata["cli"] is not None}
    assert declared == CLI_FLAGS
    for f in option_fields():
        if f.name in CLI_FLAGS:
            assert flags[f.name].help.startswith(option_help(f))
            if f.metadata["choices"]:
                assert list(flags[f.name].choices) == list(f.metadata["choices"])


def test_param_groups_and_decay_plan_take_the_config_and_its_fields():
    for fn in (param_groups, decay_plan):
        sig = inspect.signature(fn)
        assert list(sig.parameters)[:3] == ["model", "weight_decay", "config"]
        assert sig.parameters["overrides"].kind is inspect.Parameter.VAR_KEYWORD
        assert not set(sig.parameters) & set(CONFIG_FIELDS)  # no second declaration of a γ option
    model = tiny_bert()
    by_config = param_groups(model, 0.01, GammaRegConfig(policy="all", gamma_weight_decay=0.5))
    by_keywords = param_groups(model, 0.01, policy="all", gamma_weight_decay=0.5)
    overridden = param_groups(model, 0.01, GammaRegConfig(policy="none"), policy="all", gamma_weight_decay=0.5)
    for groups in (by_keywords, overridden):
        assert [(g["weight_decay"], [id(p) for p in g["params"]]) for g in groups] == [
            (g["weight_decay"], [id(p) for p in g["params"]]) for g in by_config]
    assert decay_plan(model, 0.01, regularization="l2").regularization == "l2"
    with pytest.raises(TypeError, match=r"unknown γ option\(s\) \['polcy'\]"):
        param_groups(model, 0.01, polcy="all")
    assert torch.is_tensor(by_config[0]["params"][0])


def test_a_bad_value_names_its_field():
    for kwargs, field in (({"policy": "guideline"}, "policy"), ({"invariance": "exactly"}, "invariance"),
                          ({"gamma_weight_decay": -1.0}, "gamma_weight_decay"), ({"include": ["("]}, "include"),
                          ({"regularization": "l1"}, "regularization")):
        with pytest.raises(GammaConfigError) as exc:
            GammaRegConfig(**kwargs)
        assert exc.value.field == field and str(exc.value) == f"{field}: {exc.value.message}"
        arg = "gamma_" + field if not field.startswith("gamma_") else field
        with pytest.raises(ValueError, match=f"^{arg}: "):
            GammaRegTrainingArguments(output_dir="x", **{arg: kwargs[field]})


def test_the_sweep_passes_the_config_fields_by_their_argument_names():
    sweep = load_recipe("sweep")
    entry = sweep.parse_entry("g=guidelines+approximate@include=ln@exclude=x@gwd=0.5")
    assert entry.run_flags() == ["--gamma_policy", "guidelines", "--gamma_invariance", "approximate",
                                 "--gamma_include", "ln", "--gamma_exclude", "x", "--gamma_weight_decay", "0.5"]
