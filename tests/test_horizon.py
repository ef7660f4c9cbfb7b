"""The decay horizon: `decay_horizon` against values worked out by hand, the Trainer's line and notice, bad input.

Expected values are written out from the formulas, not computed with the code under test:
- AdamW, constant lr 1e-3, λ 0.1, 1,000 steps: (1 − 1e-4)^1000 = 0.904833.
- SGD momentum 0.9, constant lr 0.1, λ 5e-4, 1,000 steps, zero loss gradient: the recurrence
  d = λ·p, buf = 0.9·buf + d (buf = d at the first step), p ← p − 0.1·buf ends at 0.607841 (Nesterov,
  p ← p − 0.1·(d + 0.9·buf): 0.607702); exp(−Σ lr·λ/(1 − μ)) = exp(−0.5) = 0.6065 is its continuous limit.
- AdamW, lr 1e-3, 100 linear warm-up steps then cosine to 0 over 900, λ 0.1: Σ lr = 1e-3·(49.5 + 450.5) = 0.5,
  so Σ lr·λ = 0.05 and Π(1 − lr_t·λ) = 0.951228.
"""

import json
import math
import os
import time

import pytest
import torch
from conftest import load_recipe
from models import tiny_bert
from transformers import get_cosine_schedule_with_warmup

from hf_gammareg import GammaRegTrainer, decay_horizon
from hf_gammareg.cli import main as cli_main
from hf_gammareg.horizon import planned_decay_horizon

RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")


def scalar():
    return torch.nn.Parameter(torch.ones(4))


def step_for_real(optimizer, scheduler, n):
    """Ground truth: the optimizer itself, stepped n times with a zero loss gradient; the parameter at the end."""
    p = optimizer.param_groups[0]["params"][0]
    for _ in range(n):
        p.grad = torch.zeros_like(p)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return float(p.detach()[0])


def test_adamw_constant_lr():
    h = decay_horizon(torch.optim.AdamW([scalar()], lr=1e-3, weight_decay=0.1), 1000)
    assert len(h) == 1 and h[0].decay == "decoupled"
    assert h[0].shrink == pytest.approx(0.904833, abs=1e-6)
    assert h[0].integral == pytest.approx(0.1)
    assert "90 %" in h[0].describe() and "1,000 steps" in h[0].describe()


@pytest.mark.parametrize("variant", [{"foreach": True}, {"fused": True}, {"foreach": False}])
def test_adamw_variants_are_the_same_decay(variant):
    h = decay_horizon(torch.optim.AdamW([scalar()], lr=1e-3, weight_decay=0.1, **variant), 1000)[0]
    assert h.shrink == pytest.approx(0.904833, abs=1e-6)


@pytest.mark.parametrize("nesterov, expected", [(False, 0.607841), (True, 0.607702)])
def test_sgd_momentum_exact_recurrence(nesterov, expected):
    make = lambda: torch.optim.SGD([scalar()], lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)  # noqa: E731
    h = decay_horizon(make(), 1000)[0]
    assert h.decay == "coupled"
    assert h.shrink == pytest.approx(expected, abs=1e-6)
    assert h.integral == pytest.approx(0.5)  # Σ lr·λ/(1 − μ) = 1000 · 0.1 · 5e-4 / 0.1
    assert step_for_real(make(), None, 1000) == pytest.approx(expected, abs=1e-5)  # torch agrees


def test_sgd_without_momentum_and_with_dampening():
    plain = decay_horizon(torch.optim.SGD([scalar()], lr=0.1, weight_decay=5e-4), 1000)[0]
    assert plain.shrink == pytest.approx((1 - 5e-5) ** 1000, abs=1e-9) and plain.integral == pytest.approx(0.05)
    damped = torch.optim.SGD([scalar()], lr=0.1, momentum=0.9, dampening=0.5, weight_decay=5e-4)
    h = decay_horizon(damped, 500)[0]
    assert h.integral == pytest.approx(500 * 0.1 * 5e-4 * 0.5 / 0.1)  # gain (1 − δ)/(1 − μ) = 5
    assert h.shrink == pytest.approx(step_for_real(damped, None, 500), abs=1e-5)


def test_warmup_and_cosine_schedule():
    opt = torch.optim.AdamW([scalar()], lr=1e-3, weight_decay=0.1)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=100, num_training_steps=1000)
    h = decay_horizon(opt, 1000, sched)[0]
    assert h.integral == pytest.approx(0.05, abs=1e-9)
    assert h.shrink == pytest.approx(0.951228, abs=1e-6)
    assert step_for_real(opt, sched, 1000) == pytest.approx(0.951228, abs=1e-5)


def test_a_torch_scheduler_that_is_not_lambda_lr():
    opt = torch.optim.SGD([scalar()], lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[500, 750], gamma=0.1)
    h = decay_horizon(opt, 1000, sched)[0]
    # Σ lr = 500·0.1 + 250·0.01 + 250·0.001 = 52.75; × λ/(1 − μ) = 0.26375
    assert h.integral == pytest.approx(0.26375)
    assert h.shrink == pytest.approx(step_for_real(opt, sched, 1000), abs=1e-5)


def test_groups_each_get_their_own_and_zero_decay_is_one():
    opt = torch.optim.AdamW([{"params": [scalar()], "weight_decay": 0.1}, {"params": [scalar()], "weight_decay": 0.0}],
                            lr=1e-3)
    decayed, plain = decay_horizon(opt, 1000)
    assert decayed.shrink == pytest.approx(0.904833, abs=1e-6)
    assert (plain.decay, plain.shrink, plain.integral, plain.group) == ("none", 1.0, 0.0, 1)


def test_coupled_adam_cannot_be_predicted():
    h = decay_horizon(torch.optim.Adam([scalar()], lr=1e-3, weight_decay=0.1), 100)[0]
    assert h.shrink is None and h.integral is None and h.decay == "coupled"
    assert "running RMS" in h.reason and "AdamW" in h.reason
    assert "cannot be predicted" in h.describe()
    assert decay_horizon(torch.optim.Adam([scalar()], lr=1e-3, weight_decay=0.1, decoupled_weight_decay=True),
                         1000)[0].shrink == pytest.approx(0.904833, abs=1e-6)


def test_adafactor_with_an_lr_is_decoupled():
    from transformers.optimization import Adafactor

    opt = Adafactor([scalar()], lr=1e-3, weight_decay=0.01, relative_step=False, scale_parameter=False)
    h = decay_horizon(opt, 1000)[0]
    assert h.decay == "decoupled" and h.shrink == pytest.approx((1 - 1e-5) ** 1000, abs=1e-7)


def test_nothing_real_is_touched():
    p = scalar()
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=5e-4)
    p.grad = torch.full_like(p, 0.5)
    opt.step()
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=10, num_training_steps=100)
    multi = torch.optim.lr_scheduler.MultiStepLR(torch.optim.SGD([scalar()], lr=0.1), milestones=[3])
    before = (p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}, opt.param_groups[0]["lr"],
              sched.last_epoch, sched.state_dict()["_step_count"], multi.last_epoch,
              multi.optimizer.param_groups[0]["lr"])
    decay_horizon(opt, 100, sched)
    decay_horizon(multi.optimizer, 10, multi)
    assert torch.equal(p.detach(), before[0])
    assert all(torch.equal(opt.state[p][k], v) for k, v in before[1].items())
    assert (opt.param_groups[0]["lr"], sched.last_epoch, sched.state_dict()["_step_count"]) == before[2:5]
    assert (multi.last_epoch, multi.optimizer.param_groups[0]["lr"]) == before[5:]


def test_bad_input_names_the_fix():
    opt = torch.optim.AdamW([scalar()], lr=1e-3)
    for bad in (0, -5):
        with pytest.raises(ValueError, match="num_steps: must be > 0.*max_steps"):
            decay_horizon(opt, bad)
    with pytest.raises(TypeError, match="num_steps"):
        decay_horizon(opt, 10.0)
    with pytest.raises(TypeError, match="parameter groups"):
        decay_horizon(object(), 10)
    other = torch.optim.AdamW([scalar()], lr=1e-3)
    with pytest.raises(ValueError, match="drives another optimizer"):
        decay_horizon(opt, 10, torch.optim.lr_scheduler.StepLR(other, 5))


def test_linear_in_steps_and_fast():
    opt = torch.optim.AdamW([{"params": [scalar()], "weight_decay": 0.1}, {"params": [scalar()], "weight_decay": 0.0}],
                            lr=1e-3)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=1000, num_training_steps=100_000)
    start = time.perf_counter()
    h = decay_horizon(opt, 100_000, sched)[0]
    assert time.perf_counter() - start < 5  # < 1 s on an idle core (benchmarks/decay_horizon_speed.py prints it)
    assert h.integral == pytest.approx(0.1 * 1e-3 * (999 / 2 + 99_000 / 2 + 0.5), rel=1e-3)


def test_planned_horizon_of_the_cli_kind():
    sst2 = planned_decay_horizon(lr=2e-5, weight_decay=0.01, num_steps=6000, schedule="linear")
    assert sst2.shrink == pytest.approx(math.exp(-0.01 * 2e-5 * 3000), abs=1e-5)  # 0.9994
    cifar = planned_decay_horizon(lr=0.1, weight_decay=5e-4, num_steps=790, optimizer="sgd", momentum=0.9,
                                  nesterov=True, schedule="cosine", warmup=40)
    assert cifar.shrink == pytest.approx(0.82, abs=0.02)
    with pytest.raises(ValueError, match="optimizer"):
        planned_decay_horizon(lr=0.1, weight_decay=0.1, num_steps=10, optimizer="lamb")


def test_one_planned_horizon_for_trainer_arguments_and_the_old_name_warns(tmp_path):
    """`planned_decay_horizon(args, ...)` reads a Trainer run from its TrainingArguments; trainer.planned_horizon
    was the same for 0.1 and now warns."""
    import warnings

    from transformers import TrainingArguments

    from hf_gammareg.trainer import planned_horizon

    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, lr_scheduler_type="constant",
                             max_steps=1000, report_to="none", use_cpu=True)
    h = planned_decay_horizon(args, num_steps=1000, weight_decay=0.1)
    # By hand: AdamW's decoupled decay at a constant lr, Σ lr·λ = 1000 · 1e-3 · 0.1 = 0.1, factor (1 − 1e-4)^1000
    assert h.decay == "decoupled" and h.integral == pytest.approx(0.1) and h.shrink == pytest.approx(0.9999 ** 1000)
    with pytest.raises(TypeError, match="args="):
        planned_decay_horizon(args, num_steps=1000, weight_decay=0.1, lr=1e-3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = planned_horizon(args, 1000, 0.1)
    assert [w.category for w in caught] == [DeprecationWarning] and "planned_decay_horizon" in str(caught[0].message)
    assert old == h


# -- the Trainer --------------------------------------------------------------------------------------
class Sized(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"input_ids": torch.tensor([1, 2, 3]), "labels": torch.tensor(0)}


def test_sst2_cpu_config_gets_the_notice(tmp_path):
    recipe = load_recipe("sst2_bert")
    _, targs = recipe.parse_args(recipe.make_parser(), [os.path.join(RECIPES, "configs", "sst2_bert_cpu.yaml"),
                                                       "--output_dir", str(tmp_path), "--model_name_or_path", "x"])
    trainer = GammaRegTrainer(model=tiny_bert(), args=targs, train_dataset=Sized(4000))  # max_train_samples 4000
    table = trainer.gamma_table()
    # post-LN BERT under exact invariance: no γ is branch/invariant, so guidelines decays none of them
    assert "decay horizon: no γ is decayed; weight decay alone would shrink a decayed parameter to 100 %" in table
    assert "over 250 steps" in table and "Σ lr·λ = 6.25e-05" in table  # 0.01 · 5e-5 · (25/2 + 225/2)
    assert "! weight decay barely moves γ in this run" in table


def test_cifar_cpu_config_states_82_percent(tmp_path):
    recipe = load_recipe("cifar_resnet")
    modeling = load_recipe("modeling_cifar_resnet")
    _, targs = recipe.parse_args(recipe.make_parser(), [os.path.join(RECIPES, "configs", "cifar_resnet_cpu.yaml"),
                                                       "--output_dir", str(tmp_path)])
    model = modeling.CifarResNetForImageClassification(modeling.CifarResNetConfig(depth=8, num_labels=10))
    trainer = GammaRegTrainer(model=model, args=targs, train_dataset=Sized(10_000))  # train_per_class 1000
    h = trainer.gamma_decay_horizon()
    assert h.num_steps == 790 and h.decay == "coupled"  # 10 epochs × ⌈10,000 / 128⌉
    assert h.shrink == pytest.approx(0.82, abs=0.02)
    table = trainer.gamma_table()
    assert "shrinks the 6 decayed γ to 82 % of their value over 790 steps" in table
    assert "barely moves" not in table


def test_horizon_counts_gradient_accumulation_and_is_the_real_one_in_training(tmp_path):
    from models import tiny_hf_resnet
    from test_trainer import Images, _args

    from hf_gammareg import GammaRegTrainingArguments

    # Images(): 16 examples; batch 2 → 8 batches an epoch; accumulation 4 → 2 optimizer steps; 3 epochs → 6.
    args = GammaRegTrainingArguments(**_args(tmp_path, num_train_epochs=3, per_device_train_batch_size=2,
                                              gradient_accumulation_steps=4, learning_rate=0.05, weight_decay=0.1,
                                              lr_scheduler_type="constant"))
    trainer = GammaRegTrainer(model=tiny_hf_resnet("basic"), args=args, train_dataset=Images(16))
    planned = trainer.gamma_decay_horizon()
    assert planned.num_steps == 6 and planned.shrink == pytest.approx((1 - 0.05 * 0.1) ** 6)
    trainer.train()
    assert trainer.state.global_step == 6
    assert trainer.gamma_horizon.num_steps == 6 and trainer.gamma_horizon.shrink == pytest.approx((1 - 0.005) ** 6)
    trainer.create_model_card(model_name="tiny")
    card = (tmp_path / "README.md").read_text()
    assert "Decay horizon: weight decay alone shrinks the 4 decayed γ to 97 % of their value over 6 steps" in card


def test_no_decayed_gamma_says_would(tmp_path):
    from models import tiny_hf_resnet
    from test_trainer import Images, _args

    from hf_gammareg import GammaRegTrainingArguments

    args = GammaRegTrainingArguments(**_args(tmp_path, max_steps=10, learning_rate=0.1, weight_decay=0.1,
                                              lr_scheduler_type="constant"), gamma_policy="none")
    table = GammaRegTrainer(model=tiny_hf_resnet("basic"), args=args, train_dataset=Images()).gamma_table()
    assert "decay horizon: no γ is decayed; weight decay alone would shrink a decayed parameter to 90 %" in table


def test_cli_prints_the_line_for_a_planned_run(capsys):
    assert cli_main(["inspect", "bert-base-uncased", "--lr", "2e-5", "--weight-decay", "0.01", "--steps", "6000"]) == 0
    out = capsys.readouterr().out
    assert "decay horizon: weight decay alone shrinks the" in out and "over 6,000 steps" in out
    assert "! weight decay barely moves γ" in out
    assert cli_main(["inspect", "resnet-50", "--lr", "0.1", "--weight-decay", "5e-4", "--steps", "790",
                     "--optimizer", "sgd", "--momentum", "0.9", "--schedule", "cosine", "--warmup", "40"]) == 0
    assert "to 82 % of their value over 790 steps" in capsys.readouterr().out
    assert cli_main(["inspect", "gpt2", "--lr", "1e-3", "--weight-decay", "0.1", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert cli_main(["inspect", "gpt2", "--steps", "100"]) == 2  # a horizon needs --lr and --weight-decay
    assert "--lr" in capsys.readouterr().err


def test_results_record_carries_the_horizon(tmp_path):
    utils = load_recipe("recipe_utils")
    from models import tiny_hf_resnet
    from test_trainer import Images, _args

    from hf_gammareg import GammaRegTrainingArguments

    args = GammaRegTrainingArguments(**_args(tmp_path, max_steps=3, learning_rate=0.05, weight_decay=0.1,
                                              lr_scheduler_type="constant"))
    trainer = GammaRegTrainer(model=tiny_hf_resnet("basic"), args=args, train_dataset=Images())
    trainer.train()
    record = json.loads(json.dumps(utils.gamma_record(trainer)))
    assert record["decay_horizon"]["num_steps"] == 3
    assert record["decay_horizon"]["shrink"] == pytest.approx((1 - 0.005) ** 3)
    assert record["decay_horizon"]["text"].startswith("decay horizon: weight decay alone shrinks the 4 decayed γ")


def test_through_accelerate_wrappers():
    from accelerate import Accelerator

    p = scalar()
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=5e-4)
    wrapped = Accelerator(cpu=True).prepare_optimizer(opt)  # an AcceleratedOptimizer (a torch Optimizer itself)
    assert decay_horizon(wrapped, 1000)[0].shrink == pytest.approx(0.607841, abs=1e-6)


class ToyDecoupled(torch.optim.Optimizer):
    """Decoupled decay and nothing else: θ ← θ·(1 − lr·λ)."""

    def __init__(self, params, lr=0.1, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.mul_(1 - group["lr"] * group["weight_decay"])


def test_an_optimizer_is_one_registry_entry(monkeypatch, capsys):
    from hf_gammareg import horizon

    param = torch.nn.Parameter(torch.ones(1))
    opt = ToyDecoupled([param], lr=0.1, weight_decay=0.5)
    # Unregistered, it is stepped on a stand-in scalar (its own rule, labelled coupled: nothing says otherwise).
    before = decay_horizon(opt, 4)[0]
    assert before.decay == "coupled" and before.shrink == pytest.approx(0.95 ** 4)
    monkeypatch.setattr(horizon, "OPTIMIZER_RULES", dict(horizon.OPTIMIZER_RULES))
    horizon.register_optimizer(ToyDecoupled, "decoupled", cli_name="toy",
                               build=lambda params, lr, wd, momentum, nesterov: ToyDecoupled(params, lr, wd))
    after = decay_horizon(opt, 4)[0]
    # By hand: Π (1 − 0.1·0.5) over 4 steps = 0.95⁴; Σ lr·λ = 4 · 0.05 = 0.2.
    assert after.decay == "decoupled" and after.shrink == pytest.approx(0.95 ** 4)
    assert after.integral == pytest.approx(0.2)
    planned = planned_decay_horizon(lr=0.1, weight_decay=0.5, num_steps=4, optimizer="toy", schedule="constant")
    assert planned.optimizer == "ToyDecoupled" and planned.shrink == pytest.approx(0.95 ** 4)
    assert cli_main(["inspect", "gpt2", "--lr", "0.1", "--weight-decay", "0.5", "--steps", "4", "--optimizer", "toy",
                     "--schedule", "constant"]) == 0
    assert "to 81 % of their value over 4 steps (decoupled decay" in capsys.readouterr().out
    with pytest.raises(ValueError, match="kind: one of"):
        horizon.register_optimizer("Other", "magic")
