"""`param_groups` / `decay_plan` / `l2_penalty` outside the Trainer, and the trainer's own decay table.

Expected γ sets are written out by hand from docs/design.md § Reference classifications (HF ResNet, basic
blocks: stem BN stream, first BN of each block invariant, second branch, shortcut BN stream; GPT-2:
ln_1/ln_2 branch, ln_f head; BERT under exact: every norm stream but the last, head).
"""

import doctest
import logging

import pytest
import torch
from models import tiny_bert, tiny_gpt2, tiny_hf_resnet
from test_trainer import ALL_GAMMAS, S0_BN1, S0_BN2, S1_BN1, S1_BN2, S1_SHORT, STEM, Sentences, _args
from transformers import Trainer, TrainingArguments

from hf_gammareg import (
    GammaRegTrainer,
    GammaRegTrainingArguments,
    classify_gammas,
    decay_plan,
    l2_penalty,
    param_groups,
)

GPT2_LN = {f"transformer.h.{i}.{ln}.weight" for i in (0, 1) for ln in ("ln_1", "ln_2")}
GPT2_HEAD = "transformer.ln_f.weight"
TRAINER_LOG = "transformers.trainer.hf_gammareg"  # a child of Trainer's own logger


def table_records(caplog):
    """The γ table and the notices that follow it, as the trainer logged them."""
    return [r for r in caplog.records if r.name == TRAINER_LOG
            and r.getMessage().startswith(("hf_gammareg: γ weight decay", "hf_gammareg: !"))]


def layout(groups):
    """A group list as comparable data: (weight_decay, γ-group marker, parameter identities in order)."""
    return [(g["weight_decay"], g.get("gamma_group", False), [id(p) for p in g["params"]]) for g in groups]


def coefficients(model, groups):
    """``{parameter name: weight decay of the group holding it}``."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["weight_decay"] for g in groups for p in g["params"]}


# -- the same groups as GammaRegTrainer --------------------------------------------------------------------
@pytest.mark.parametrize("policy,gwd,decayed", [
    ("guidelines", None, {S0_BN1, S0_BN2, S1_BN1, S1_BN2}),
    ("all", None, ALL_GAMMAS),
    ("none", None, set()),
    ("only:stream", None, {STEM, S1_SHORT}),
    ("branch,invariant", None, {S0_BN1, S0_BN2, S1_BN1, S1_BN2}),
    ("hf-default", None, ALL_GAMMAS),  # transformers.Trainer's name rule misses HF vision BatchNorms
    ("guidelines", 0.3, {S0_BN1, S0_BN2, S1_BN1, S1_BN2}),  # a third group at 0.3
    ("only:branch", 0.05, {S0_BN2, S1_BN2}),  # the same coefficient as the rest: no group of its own
])
def test_param_groups_equal_the_trainers(tmp_path, policy, gwd, decayed):
    model = tiny_hf_resnet("basic")
    trainer = GammaRegTrainer(model=model, args=GammaRegTrainingArguments(
        **_args(tmp_path), gamma_policy=policy, gamma_weight_decay=gwd))
    trainer.create_optimizer()
    groups = param_groups(model, 0.05, policy=policy, gamma_weight_decay=gwd)
    assert layout(groups) == layout(trainer.optimizer.param_groups)
    coef = coefficients(model, groups)
    wd = 0.05 if gwd is None else gwd
    assert {n: coef[n] for n in ALL_GAMMAS} == {n: (wd if n in decayed else 0.0) for n in ALL_GAMMAS}
    assert coef["classifier.1.weight"] == 0.05 and coef["classifier.1.bias"] == 0.0
    assert len(groups) == (3 if gwd == 0.3 else 2)


def test_include_exclude_equal_the_trainers(tmp_path):
    model = tiny_gpt2()
    trainer = GammaRegTrainer(model=model, args=GammaRegTrainingArguments(
        **_args(tmp_path), gamma_policy="guidelines", gamma_include=["ln_f"], gamma_exclude=[r"h\.1\."]))
    trainer.create_optimizer()
    groups = param_groups(model, 0.05, include=["ln_f"], exclude=[r"h\.1\."])
    assert layout(groups) == layout(trainer.optimizer.param_groups)
    coef = coefficients(model, groups)
    assert {n: coef[n] for n in GPT2_LN | {GPT2_HEAD}} == {
        "transformer.h.0.ln_1.weight": 0.05, "transformer.h.0.ln_2.weight": 0.05,
        "transformer.h.1.ln_1.weight": 0.0, "transformer.h.1.ln_2.weight": 0.0, GPT2_HEAD: 0.05}


def test_hf_default_equals_plain_trainer_and_the_no_trainer_examples_rule(tmp_path):
    model = tiny_bert()
    plain = Trainer(model=model, args=TrainingArguments(**_args(tmp_path)))
    plain.create_optimizer()
    assert layout(param_groups(model, 0.05, policy="hf-default")) == layout(plain.optimizer.param_groups)
    # transformers' run_glue_no_trainer.py, verbatim: with policy="hf-default" and its own rule, the same groups
    no_decay = ["bias", "LayerNorm.weight"]
    example = [
        {
            "params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)],
            "weight_decay": 0.05,
        },
        {
            "params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)],
            "weight_decay": 0.0,
        },
    ]
    assert layout(param_groups(model, 0.05, policy="hf-default", no_decay=no_decay)) == layout(example)
    # and with the default policy the example's rule still decides every non-γ parameter (BERT, exact:
    # all five γ are stream or head, so `all` is the policy that changes something)
    coef = coefficients(model, param_groups(model, 0.05, policy="all", no_decay=no_decay))
    assert coef["bert.encoder.layer.1.output.LayerNorm.weight"] == 0.05
    assert coef["bert.encoder.layer.0.output.dense.bias"] == 0.0 and coef["bert.pooler.dense.weight"] == 0.05
    # a callable rule returns the names that get no decay
    coef = coefficients(model, param_groups(model, 0.05, no_decay=lambda m: ["classifier.weight"]))
    assert coef["classifier.weight"] == 0.0 and coef["classifier.bias"] == 0.05


# -- wrapped, compiled, frozen -------------------------------------------------------------------------------
def test_ddp_and_compiled_models_give_the_same_split(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = tiny_hf_resnet("basic")
        expected = layout(param_groups(model, 0.05, gamma_weight_decay=0.3))
        for wrapped in (DDP(model), torch.compile(model, backend="eager"), DDP(torch.compile(model, backend="eager"))):
            groups = param_groups(wrapped, 0.05, gamma_weight_decay=0.3)
            assert layout(groups) == expected  # the very same parameters, group by group
            prefix = next(n for n, _ in wrapped.named_parameters()).split("resnet.")[0]
            assert prefix in ("module.", "_orig_mod.", "module._orig_mod.")
            coef = coefficients(wrapped, groups)
            assert {n for n in ALL_GAMMAS if coef[prefix + n] == 0.3} == {S0_BN1, S0_BN2, S1_BN1, S1_BN2}
    finally:
        dist.destroy_process_group()


def test_frozen_parameters_are_left_out():
    model = tiny_hf_resnet("basic")
    frozen = {S0_BN2, "classifier.1.weight", "resnet.embedder.embedder.convolution.weight"}
    for n, p in model.named_parameters():
        p.requires_grad_(n not in frozen)
    groups = param_groups(model, 0.05, gamma_weight_decay=0.3)
    coef = coefficients(model, groups)
    assert not frozen & set(coef)
    assert set(coef) == {n for n, _ in model.named_parameters()} - frozen
    assert {n for n in ALL_GAMMAS if coef.get(n) == 0.3} == {S0_BN1, S1_BN1, S1_BN2}


def test_adamw_on_param_groups_trains_a_tiny_model():
    torch.manual_seed(0)
    model = tiny_gpt2()
    optimizer = torch.optim.AdamW(param_groups(model, 0.1, gamma_weight_decay=0.5), lr=1e-2)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0, 0.5]
    ids = torch.randint(0, 64, (4, 8), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(15):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]  # ~4.2 (uniform over 64 tokens) → memorized


def test_a_plain_loop_on_param_groups_trains_exactly_like_the_trainer(tmp_path):
    # Same batches in the same order, no dropout, warm-up + linear schedule, clipping, AdamW on the plan's
    # groups (γ decayed at a coefficient of their own): the loop a no_trainer recipe runs is the Trainer's
    # computation, parameter for parameter. Any accuracy gap between the two recipes is their random streams.
    from torch.utils.data import DataLoader, SequentialSampler
    from transformers import BertConfig, BertForSequenceClassification, get_scheduler

    def build():
        torch.manual_seed(0)
        return BertForSequenceClassification(BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=64,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))

    class InOrder(GammaRegTrainer):
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    data, steps = Sentences(32), 8
    kw = dict(gamma_invariance="approximate", gamma_weight_decay=0.5, learning_rate=1e-2, warmup_steps=2,
              lr_scheduler_type="linear", max_grad_norm=1.0, max_steps=steps)
    trained = build()
    trainer = InOrder(model=trained, args=GammaRegTrainingArguments(**_args(tmp_path, **kw)), train_dataset=data)
    trainer.train()

    model = build()
    plan = decay_plan(model, 0.05, invariance="approximate", gamma_weight_decay=0.5)
    assert {g["weight_decay"] for g in plan.param_groups(model)} == {0.05, 0.0, 0.5}
    optimizer = torch.optim.AdamW(plan.param_groups(model), lr=1e-2)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=2, num_training_steps=steps)
    model.train()
    for batch in DataLoader(data, batch_size=4):
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    start = build().state_dict()
    after, ours = dict(trained.named_parameters()), dict(model.named_parameters())
    assert any(not torch.equal(ours[n], start[n]) for n in ours)  # it trained
    # Equal up to float rounding (~1e-6 after 8 steps: the Trainer's step rounds differently somewhere from
    # step 2 on); a wrong coefficient or learning rate for any group would differ by >= lr·wd = 5e-4 a step.
    worst = max((ours[n] - after[n]).abs().max().item() for n in ours)
    assert worst < 1e-4, f"the loop and the Trainer differ by up to {worst:.2e}"


# -- bad input -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,error,match", [
    ({"weight_decay": -0.1}, ValueError, "weight_decay: must be a finite number >= 0"),
    ({"weight_decay": "0.1"}, TypeError, "weight_decay: expected a number"),
    ({"policy": "guideline"}, ValueError, "policy: unknown gamma policy"),
    ({"invariance": "fuzzy"}, ValueError, "invariance: must be one of"),
    ({"gamma_weight_decay": -1.0}, ValueError, "gamma_weight_decay: must be a finite number >= 0"),
    ({"include": ["(a+)+$"]}, ValueError, "include: .*exponential time"),
    ({"no_decay": "bias"}, TypeError, "no_decay: pass a list of name substrings"),
    ({"no_decay": 3}, TypeError, "no_decay: expected None"),
])
def test_bad_arguments_name_the_argument(kwargs, error, match):
    kwargs = {"weight_decay": 0.1, **kwargs}
    with pytest.raises(error, match=match):
        param_groups(tiny_hf_resnet("basic"), kwargs.pop("weight_decay"), **kwargs)


def test_keyword_only_and_reports_that_do_not_fit():
    model = tiny_hf_resnet("basic")
    with pytest.raises(TypeError):
        param_groups(model, 0.1, "all")  # policy is keyword-only
    with pytest.raises(ValueError, match="invariance: the γ report was classified with invariance='approximate'"):
        param_groups(model, 0.1, report=classify_gammas(model, invariance="approximate"))
    with pytest.raises(ValueError, match="6 γ of the γ report are not parameters of the model"):
        param_groups(tiny_bert(), 0.1, report=classify_gammas(model))
    with pytest.raises(ValueError, match="this plan was made for another model"):
        decay_plan(model, 0.1).param_groups(tiny_bert())


# -- coupled L2 ------------------------------------------------------------------------------------------------
def test_l2_penalty_for_custom_loops():
    model = tiny_hf_resnet("basic")
    plan = decay_plan(model, 0.05, gamma_weight_decay=0.2, regularization="l2")
    coef = coefficients(model, plan.param_groups(model))
    assert all(coef[n] == 0.0 for n in ALL_GAMMAS)  # γ decay moves into the loss
    assert coef["classifier.1.weight"] == 0.05
    penalty = l2_penalty(model, plan)
    # γ start at 1; decayed (guidelines): 16 + 16 (stage 0) + 32 + 32 (stage 1) channels → 0.5·0.2·96
    assert penalty.item() == pytest.approx(9.6)
    penalty.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(grads) == {S0_BN1, S0_BN2, S1_BN1, S1_BN2}
    torch.testing.assert_close(grads[S1_BN2], torch.full((32,), 0.2))  # d/dγ λ/2·γ² = λγ
    with pytest.raises(ValueError, match="regularization='l2'"):
        l2_penalty(model, decay_plan(model, 0.05))
    assert l2_penalty(model, decay_plan(model, 0.05, policy="none", regularization="l2")).item() == 0.0


def test_docstring_example_runs():
    import hf_gammareg.plan as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0


# -- the trainer's own table -------------------------------------------------------------------------------------
def table_rows(text):
    """``{parameter: (role, decayed, coefficient)}`` from a γ table."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("parameter")) + 2
    rows = {}
    for line in lines[start:]:
        if not line.strip():
            break
        cells = [c for c in line.split("  ") if c.strip()]
        rows[cells[0].strip()] = tuple(c.strip() for c in cells[1:4])
    return rows


def optimizer_coefficients(trainer):
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    return {names[id(p)]: g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}


@pytest.mark.parametrize("kwargs,header,expected", [
    # the case: the optimizer decays ln_f only; the old README table showed the opposite
    ({"gamma_policy": "none", "gamma_include": ["ln_f"]},
     "policy 'none', invariance exact, include 'ln_f', exclude none; decoupled weight decay 0.05, decayed γ 0.05",
     {"transformer.h.0.ln_1.weight": ("branch", "no", "0"), "transformer.h.0.ln_2.weight": ("branch", "no", "0"),
      "transformer.h.1.ln_1.weight": ("branch", "no", "0"), "transformer.h.1.ln_2.weight": ("branch", "no", "0"),
      GPT2_HEAD: ("head", "yes (include)", "0.05")}),
    ({"gamma_policy": "guidelines", "gamma_exclude": [r"h\.1\."], "gamma_weight_decay": 0.3},
     (r"policy 'guidelines', invariance exact, include none, exclude 'h\\.1\\.'; decoupled weight decay 0.05, "
      "decayed γ 0.3"),
     {"transformer.h.0.ln_1.weight": ("branch", "yes", "0.3"), "transformer.h.0.ln_2.weight": ("branch", "yes", "0.3"),
      "transformer.h.1.ln_1.weight": ("branch", "no (exclude)", "0"),
      "transformer.h.1.ln_2.weight": ("branch", "no (exclude)", "0"), GPT2_HEAD: ("head", "no", "0")}),
])
def test_gamma_table_is_what_the_optimizer_does(tmp_path, trainer_log, kwargs, header, expected):
    trainer = GammaRegTrainer(model=tiny_gpt2(), args=GammaRegTrainingArguments(
        **_args(tmp_path, max_steps=1), gamma_log_norms=False, **kwargs), train_dataset=_tokens())
    trainer.train()
    table = trainer.gamma_table()
    rows = table_rows(table)
    assert rows == expected
    actual = optimizer_coefficients(trainer)  # the table agrees with the optimizer's groups, γ by γ
    assert {n: float(c) for n, (_, _, c) in rows.items()} == {n: actual[n] for n in rows}
    assert table.splitlines()[0] == "γ weight decay of this optimizer — " + header
    # logged once, where Trainer logs: the table at INFO, then — include/exclude changed the roles' decisions —
    # the notice that names it, at WARNING and only there
    logged = table_records(trainer_log)
    assert [r.levelno for r in logged] == [logging.INFO, logging.WARNING]
    assert logged[0].getMessage() == "hf_gammareg: " + trainer.gamma_table(notices=False)
    assert "gamma_include/gamma_exclude override the roles for" not in logged[0].getMessage()
    assert logged[1].getMessage().startswith("hf_gammareg: ! gamma_include/gamma_exclude override the roles for ")


def test_gamma_table_at_info_when_nothing_needs_attention(tmp_path, trainer_log):
    # lr·λ = 0.1 in its one step: the decay horizon is not negligible either (no "barely moves γ" notice).
    trainer = GammaRegTrainer(model=tiny_gpt2(), args=GammaRegTrainingArguments(
        **_args(tmp_path, max_steps=1, learning_rate=1.0, weight_decay=0.1), gamma_log_norms=False),
        train_dataset=_tokens())
    trainer.train()
    logged = table_records(trainer_log)
    assert [r.levelno for r in logged] == [logging.INFO]
    assert "4 of 5 γ decayed (128 of 160 values)" in logged[0].getMessage() and "\n! " not in logged[0].getMessage()


@pytest.mark.parametrize("model,kwargs,notice", [
    # post-LN BERT under exact: guidelines decays none of the 5 γ, exactly like Trainer
    (tiny_bert, {}, ("policy 'guidelines' decays none of the 5 γ — the same split as transformers.Trainer "
                     "(hf-default); post-LN model: try gamma_invariance='approximate'")),
    (tiny_gpt2, {"weight_decay": 0.0}, ("weight decay is 0, so none of the 4 γ that policy 'guidelines' selects is "
                                        "decayed: set weight_decay (e.g. 0.01) or gamma_weight_decay.")),
    (tiny_gpt2, {"gamma_include": ["ln_ff"]}, "gamma_include pattern 'ln_ff' matches no γ"),
])
def test_gamma_table_warns_with_the_fix(tmp_path, trainer_log, model, kwargs, notice):
    data = Sentences() if model is tiny_bert else _tokens()
    args = _args(tmp_path, max_steps=1, **{k: v for k, v in kwargs.items() if not k.startswith("gamma_")})
    trainer = GammaRegTrainer(model=model(), args=GammaRegTrainingArguments(
        **args, gamma_log_norms=False, **{k: v for k, v in kwargs.items() if k.startswith("gamma_")}),
        train_dataset=data)
    trainer.train()
    warnings = [r.getMessage() for r in trainer_log.records if r.name == TRAINER_LOG
                and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and notice in warnings[0]


def test_gamma_table_before_the_optimizer_is_planned(tmp_path):
    trainer = GammaRegTrainer(model=tiny_gpt2(), args=GammaRegTrainingArguments(**_args(tmp_path)))
    table = trainer.gamma_table()
    assert table.startswith("γ weight decay as planned (the optimizer is not built yet)")
    assert table_rows(table)[GPT2_HEAD] == ("head", "no", "0")
    assert table_rows(table)["transformer.h.1.ln_2.weight"] == ("branch", "yes", "0.05")


def _tokens():
    from test_scale_out import _tokens

    return _tokens()


# -- FSDP2 (fully_shard), two processes ---------------------------------------------------------------------------
@pytest.mark.multiprocess
def test_fsdp2_fully_shard_two_processes(tmp_path):
    import sys

    from test_scale_out import SCRIPTS, _free_port, _launch

    r0, r1 = _launch([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                      "--master_port", str(_free_port()), str(SCRIPTS / "fsdp2_train.py")], tmp_path)
    assert (r0["world_size"], r1["world_size"]) == (2, 2)
    assert "classify it before sharding and pass the report" in r0["refused_without_report"]
    # both ranks hold the same groups: HF's rule for the rest, the branch γ in a group of their own
    assert r0["groups"] == r1["groups"]
    matrices = {f"transformer.h.{i}.{m}.weight" for i in (0, 1)
                for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert [g[0] for g in r0["groups"]] == [0.05, 0.0, 0.2]
    assert set(r0["groups"][0][1]) == matrices | {"transformer.wte.weight", "transformer.wpe.weight"}
    assert set(r0["groups"][2][1]) == GPT2_LN and GPT2_HEAD in r0["groups"][1][1]
    assert r0["gamma_types"] == ["DTensor"]  # the optimizer holds the shards
    # the logged γ norms are the global ones, equal to the unsharded model's after the same steps ...
    for r in (r0, r1):
        assert set(r["stats"]) == {"branch", "head"}
        for role, s in r["stats"].items():
            for key in ("norm", "abs_mean"):
                assert s[key] == pytest.approx(r["reference_stats"][role][key], rel=1e-5)
    # ... where a rank's own shard would have logged about 1/√2 of ln_f's norm
    assert abs(r0["ln_f_local_norm"] - r0["stats"]["head"]["norm"]) > 1.0
    # coupled L2 through l2_penalty on shards: the same γ as the unsharded run; the penalty moved them
    assert max(r0["l2_max_diff"].values()) < 1e-5 and min(r0["l2_moved"].values()) > 0.05


def test_param_groups_warns_like_the_trainer(caplog):
    with caplog.at_level(logging.WARNING, logger="hf_gammareg.plan"):
        param_groups(tiny_gpt2(), 0.01, include=["ln_ff"])
    assert any("include pattern 'ln_ff' matches no γ" in r.getMessage() for r in caplog.records)
