"""GammaRegTrainer: which parameters the optimizer decays, bit-identity with Trainer, coupled L2."""

import pytest
import torch
from models import tiny_bert, tiny_hf_resnet
from torch.utils.data import Dataset
from transformers import HfArgumentParser, Trainer, TrainingArguments

from hf_gammareg import GammaAnalysisError, GammaRegConfig, GammaRegTrainer, GammaRegTrainingArguments, classify_gammas

STEM = "resnet.embedder.embedder.normalization.weight"
S0_BN1 = "resnet.encoder.stages.0.layers.0.layer.0.normalization.weight"
S0_BN2 = "resnet.encoder.stages.0.layers.0.layer.1.normalization.weight"
S1_SHORT = "resnet.encoder.stages.1.layers.0.shortcut.normalization.weight"
S1_BN1 = "resnet.encoder.stages.1.layers.0.layer.0.normalization.weight"
S1_BN2 = "resnet.encoder.stages.1.layers.0.layer.1.normalization.weight"
ALL_GAMMAS = {STEM, S0_BN1, S0_BN2, S1_SHORT, S1_BN1, S1_BN2}


class Images(Dataset):
    def __init__(self, n=8):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 32, 32, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


class Sentences(Dataset):
    def __init__(self, n=16):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 64, (n, 6), generator=g)
        self.y = torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.y[i]}


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), report_to="none", weight_decay=0.05, per_device_train_batch_size=4,
                use_cpu=True, save_strategy="no", logging_strategy="no", seed=0, disable_tqdm=True)
    base.update(kw)
    return base


def _decay_by_name(trainer):
    model = trainer.model
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            out[names[id(p)]] = group["weight_decay"]
    return out


@pytest.mark.parametrize(
    "policy,decayed_gammas",
    [
        ("guidelines", {S0_BN1, S0_BN2, S1_BN1, S1_BN2}),
        ("all", ALL_GAMMAS),
        ("none", set()),
        ("only:stream", {STEM, S1_SHORT}),
        ("only:branch", {S0_BN2, S1_BN2}),
        ("branch,invariant", {S0_BN1, S0_BN2, S1_BN1, S1_BN2}),
        # transformers.Trainer's name rule misses BatchNorm in HF vision models: it decays them all
        ("hf-default", ALL_GAMMAS),
    ],
)
def test_optimizer_groups_follow_policy(tmp_path, policy, decayed_gammas):
    torch.manual_seed(0)
    model = tiny_hf_resnet("basic")
    trainer = GammaRegTrainer(model=model, args=GammaRegTrainingArguments(**_args(tmp_path), gamma_policy=policy))
    trainer.create_optimizer()
    decay = _decay_by_name(trainer)
    assert {n for n in ALL_GAMMAS if decay[n] == 0.05} == decayed_gammas
    assert {n for n in ALL_GAMMAS if decay[n] == 0.0} == ALL_GAMMAS - decayed_gammas
    # every other parameter is decided exactly as transformers.Trainer decides it
    plain = Trainer(model=model, args=TrainingArguments(**_args(tmp_path)))
    plain.create_optimizer()
    plain_decay = _decay_by_name(plain)
    assert {n: d for n, d in decay.items() if n not in ALL_GAMMAS} == {
        n: d for n, d in plain_decay.items() if n not in ALL_GAMMAS}
    assert decay["classifier.1.bias"] == 0.0 and decay["classifier.1.weight"] == 0.05


def test_gamma_weight_decay_gets_its_own_group(tmp_path):
    model = tiny_hf_resnet("basic")
    args = GammaRegTrainingArguments(**_args(tmp_path), gamma_weight_decay=0.3)
    trainer = GammaRegTrainer(model=model, args=args)
    trainer.create_optimizer()
    assert len(trainer.optimizer.param_groups) == 3
    decay = _decay_by_name(trainer)
    assert {n for n in ALL_GAMMAS if decay[n] == 0.3} == {S0_BN1, S0_BN2, S1_BN1, S1_BN2}
    assert decay[STEM] == 0.0 and decay["classifier.1.weight"] == 0.05


@pytest.mark.parametrize("optim", ["sgd", "adafactor", "adamw_torch"])
def test_every_optimizer_gets_the_split(tmp_path, optim):
    model = tiny_hf_resnet("basic")
    trainer = GammaRegTrainer(model=model, args=GammaRegTrainingArguments(**_args(tmp_path), optim=optim))
    trainer.create_optimizer()
    decay = _decay_by_name(trainer)
    assert decay[S0_BN2] == 0.05 and decay[STEM] == 0.0


def test_plain_training_arguments_are_converted(tmp_path):
    trainer = GammaRegTrainer(model=tiny_hf_resnet("basic"), args=TrainingArguments(**_args(tmp_path)))
    assert isinstance(trainer.args, GammaRegTrainingArguments)
    assert trainer.args.weight_decay == 0.05 and trainer.args.gamma_policy == "guidelines"
    trainer.create_optimizer()
    assert _decay_by_name(trainer)[S1_SHORT] == 0.0


def test_precomputed_report_is_used(tmp_path):
    model = tiny_hf_resnet("basic")
    report = classify_gammas(model)
    report.roles[STEM] = "branch"  # a user override through the report itself
    trainer = GammaRegTrainer(model=model, args=GammaRegTrainingArguments(**_args(tmp_path)), gamma_report=report)
    trainer.create_optimizer()
    assert _decay_by_name(trainer)[STEM] == 0.05


def _train(trainer_cls, args_cls, tmp_path, **extra):
    torch.manual_seed(0)
    model = tiny_bert()
    trainer = trainer_cls(model=model, args=args_cls(**_args(tmp_path, max_steps=3, learning_rate=1e-2), **extra),
                          train_dataset=Sentences())
    trainer.train()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_hf_default_is_bit_identical_to_trainer(tmp_path):
    plain = _train(Trainer, TrainingArguments, tmp_path / "plain")
    ours = _train(GammaRegTrainer, GammaRegTrainingArguments, tmp_path / "ours", gamma_policy="hf-default")
    assert plain.keys() == ours.keys()
    for name in plain:
        assert torch.equal(plain[name], ours[name]), name
    # and the comparison can fail: a policy that decays the γ gives different weights
    other = _train(GammaRegTrainer, GammaRegTrainingArguments, tmp_path / "all", gamma_policy="all")
    assert not torch.equal(plain["bert.encoder.layer.1.output.LayerNorm.weight"],
                           other["bert.encoder.layer.1.output.LayerNorm.weight"])


def test_l2_adds_the_penalty_to_the_training_loss(tmp_path):
    torch.manual_seed(0)
    model = tiny_hf_resnet("basic")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in ALL_GAMMAS:
                p.uniform_(0.5, 1.5)  # away from 1 so the penalty is not a round number
    args = GammaRegTrainingArguments(**_args(tmp_path), gamma_regularization="l2", gamma_weight_decay=0.2)
    trainer = GammaRegTrainer(model=model, args=args)
    trainer.create_optimizer()
    decay = _decay_by_name(trainer)
    assert all(decay[n] == 0.0 for n in ALL_GAMMAS)  # no decoupled decay on γ in l2 mode
    batch = {"pixel_values": Images()[0]["pixel_values"][None].repeat(2, 1, 1, 1), "labels": torch.tensor([0, 1])}
    model.train()
    loss = trainer.compute_loss(model, batch)
    model_loss = model(**batch).loss  # train-mode BN: same batch, same statistics
    params = dict(model.named_parameters())
    expected = 0.5 * 0.2 * sum(params[n].pow(2).sum() for n in (S0_BN1, S0_BN2, S1_BN1, S1_BN2))
    torch.testing.assert_close(loss - model_loss, expected)
    assert expected.item() > 0.1
    model.eval()
    torch.testing.assert_close(trainer.compute_loss(model, batch), model(**batch).loss)  # eval: no penalty


# -- configuration errors ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"gamma_policy": "guideline"}, "gamma_policy: "),
        ({"gamma_policy": "only:trunk"}, "gamma_policy: "),
        ({"gamma_invariance": "fuzzy"}, "gamma_invariance: "),
        ({"gamma_include": ["(bad"]}, "gamma_include: invalid regular expression"),
        ({"gamma_exclude": ["[z-a]"]}, "gamma_exclude: invalid regular expression"),
        ({"gamma_regularization": "l1"}, "gamma_regularization: "),
        ({"gamma_weight_decay": -1.0}, "gamma_weight_decay: "),
    ],
)
def test_bad_arguments_name_the_field(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        GammaRegTrainingArguments(output_dir=str(tmp_path), report_to="none", **kwargs)


def test_hf_argument_parser_exposes_gamma_fields(tmp_path):
    (args,) = HfArgumentParser(GammaRegTrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--gamma_policy", "only:branch", "--gamma_include", "a", "b",
         "--gamma_weight_decay", "0.5", "--report_to", "none"])
    assert args.gamma_config == GammaRegConfig(policy="only:branch", include=["a", "b"], gamma_weight_decay=0.5)
    help_text = HfArgumentParser(GammaRegTrainingArguments).format_help()
    assert "--gamma_policy" in help_text and "--gamma_regularization" in help_text


class NoNorms(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x, labels=None):
        logits = self.fc(x)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def test_model_without_norms_warns_and_keeps_hf_default(tmp_path):
    trainer = GammaRegTrainer(model=NoNorms(), args=GammaRegTrainingArguments(**_args(tmp_path)))
    with pytest.warns(UserWarning, match="no normalization scale parameters"):
        trainer.create_optimizer()
    assert _decay_by_name(trainer) == {"fc.weight": 0.05, "fc.bias": 0.0}  # exactly HF's split


def test_forward_failure_in_trainer_names_the_fix(tmp_path):
    class NeedsExtra(NoNorms):
        def __init__(self):
            super().__init__()
            self.ln = torch.nn.LayerNorm(4)

        def forward(self, x, extra, labels=None):
            return super().forward(self.ln(x) * extra, labels)

    trainer = GammaRegTrainer(model=NeedsExtra(), args=GammaRegTrainingArguments(**_args(tmp_path)))
    with pytest.raises(GammaAnalysisError, match="gamma_report="):
        trainer.create_optimizer()


def test_l2_applies_with_a_user_supplied_optimizer(tmp_path):
    model = tiny_hf_resnet("basic")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    args = GammaRegTrainingArguments(**_args(tmp_path), gamma_regularization="l2", gamma_weight_decay=0.2)
    trainer = GammaRegTrainer(model=model, args=args, optimizers=(optimizer, None))
    model.train()
    batch = {"pixel_values": Images()[0]["pixel_values"][None].repeat(2, 1, 1, 1), "labels": torch.tensor([0, 1])}
    penalty = trainer.compute_loss(model, batch) - model(**batch).loss
    params = dict(model.named_parameters())
    expected = 0.5 * 0.2 * sum(params[n].pow(2).sum() for n in (S0_BN1, S0_BN2, S1_BN1, S1_BN2))
    assert expected.item() == pytest.approx(0.1 * 96)  # γ start at 1: 16 + 16 + 32 + 32 channels
    torch.testing.assert_close(penalty, expected)
