"""TRL's `SFTTrainer` composed with `GammaRegMixin`: its arguments stay an `SFTConfig`, `hf-default` trains
bit-identically to plain `SFTTrainer`, and `guidelines` reads GPT-2's roles through the forward TRL patches."""

import dataclasses

import pytest
import torch
from models import tiny_gpt2

from hf_gammareg import GammaRegArgumentsMixin, GammaRegMixin, GammaRegTrainingArguments

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
from trl import SFTConfig, SFTTrainer  # noqa: E402

WORDS = ["[PAD]", "[EOS]", "[UNK]"] + "the cat sat on a mat dog ran far and fast".split()


class GammaRegSFTTrainer(GammaRegMixin, SFTTrainer):
    pass


@dataclasses.dataclass
class GammaRegSFTConfig(GammaRegArgumentsMixin, SFTConfig):
    pass


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]")


def _dataset():
    return datasets.Dataset.from_dict(
        {"text": ["the cat sat on a mat", "a dog ran far and fast", "the dog sat", "a cat ran fast"] * 4})


def _model():
    torch.manual_seed(0)
    return tiny_gpt2(vocab_size=len(WORDS), n_embd=16, n_positions=32)  # dropout 0.1: training draws from the RNG


def _config(tmp_path, **kw):
    return dict(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
                weight_decay=0.1, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, **kw)


def _train(trainer_cls, args, **kw):
    model = _model()
    trainer = trainer_cls(model=model, args=args, train_dataset=_dataset(), processing_class=_tokenizer(), **kw)
    loss = trainer.train().training_loss
    return trainer, loss, {n: p.detach().clone() for n, p in model.named_parameters()}


GPT2_ROLES = {  # DESIGN.md § Reference classifications, by hand
    "transformer.h.0.ln_1.weight": "branch",
    "transformer.h.0.ln_2.weight": "branch",
    "transformer.h.1.ln_1.weight": "branch",
    "transformer.h.1.ln_2.weight": "branch",
    "transformer.ln_f.weight": "head",
}


def test_a_plain_sft_config_stays_an_sft_config(tmp_path):
    trainer = GammaRegSFTTrainer(model=_model(), args=SFTConfig(**_config(tmp_path), max_length=24),
                                 train_dataset=_dataset(), processing_class=_tokenizer())
    assert isinstance(trainer.args, SFTConfig) and isinstance(trainer.args, GammaRegArgumentsMixin)
    assert trainer.args.max_length == 24 and trainer.args.gamma_policy == "guidelines"


def test_converted_arguments_survive_pickling(tmp_path):
    # The Trainer saves its arguments with torch.save (training_args.bin); the made class pickles through SFTConfig.
    trainer = GammaRegSFTTrainer(model=_model(), args=SFTConfig(**_config(tmp_path), max_length=24),
                                 train_dataset=_dataset(), processing_class=_tokenizer())
    path = tmp_path / "training_args.bin"
    torch.save(trainer.args, path)
    loaded = torch.load(path, weights_only=False)
    assert type(loaded) is type(trainer.args) and loaded.max_length == 24
    assert loaded.gamma_config == trainer.gamma_config


def test_plain_arguments_keep_their_class_or_take_the_trainers(tmp_path):
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    from hf_gammareg import GammaRegSeq2SeqTrainingArguments
    from hf_gammareg.training_args import convert_training_args

    plain = TrainingArguments(output_dir=str(tmp_path), report_to="none", weight_decay=0.3)
    assert type(convert_training_args(plain)) is GammaRegTrainingArguments
    # Seq2SeqTrainer reads the seq2seq fields: a plain TrainingArguments given to GammaRegSeq2SeqTrainer gains them
    raised = convert_training_args(plain, GammaRegSeq2SeqTrainingArguments)
    assert type(raised) is GammaRegSeq2SeqTrainingArguments and raised.weight_decay == 0.3
    seq2seq = Seq2SeqTrainingArguments(output_dir=str(tmp_path), report_to="none", predict_with_generate=True)
    kept = convert_training_args(seq2seq, GammaRegTrainingArguments)
    assert type(kept) is GammaRegSeq2SeqTrainingArguments and kept.predict_with_generate


def test_arguments_with_gamma_fields_are_used_as_they_are(tmp_path):
    args = GammaRegSFTConfig(**_config(tmp_path), gamma_policy="none")
    trainer = GammaRegSFTTrainer(model=_model(), args=args, train_dataset=_dataset(), processing_class=_tokenizer())
    assert trainer.args is args and trainer.gamma_config.policy == "none"


def test_arguments_the_base_rebuilds_name_the_fix(tmp_path):
    with pytest.raises(TypeError, match=r"rebuilt the GammaRegTrainingArguments .* Pass args= of the class it "
                                        r"expects \(e\.g\. SFTConfig"):
        GammaRegSFTTrainer(model=_model(), args=GammaRegTrainingArguments(**_config(tmp_path)),
                           train_dataset=_dataset(), processing_class=_tokenizer())


def test_hf_default_is_bit_identical_to_sft_trainer(tmp_path):
    _, plain_loss, plain = _train(SFTTrainer, SFTConfig(**_config(tmp_path / "plain")))
    trainer, loss, ours = _train(GammaRegSFTTrainer, GammaRegSFTConfig(**_config(tmp_path / "ours"),
                                                                       gamma_policy="hf-default"))
    assert "forward" in trainer.model.__dict__  # TRL's patch was in place when the roles were read
    assert trainer.gamma_report.roles == GPT2_ROLES
    assert loss == plain_loss
    assert plain.keys() == ours.keys()
    for name in plain:
        assert torch.equal(plain[name], ours[name]), name
    # and the comparison can fail: decaying the γ changes them
    _, _, decayed = _train(GammaRegSFTTrainer, GammaRegSFTConfig(**_config(tmp_path / "all"), gamma_policy="all"))
    assert not torch.equal(plain["transformer.h.0.ln_1.weight"], decayed["transformer.h.0.ln_1.weight"])


def test_guidelines_reads_gpt2_roles_through_trl_forward(tmp_path):
    trainer = GammaRegSFTTrainer(model=_model(), args=SFTConfig(**_config(tmp_path)), train_dataset=_dataset(),
                                 processing_class=_tokenizer())
    trainer.create_optimizer()
    report = trainer.gamma_report
    assert report.roles == GPT2_ROLES and report.unused == [] and report.inputs_source == "training batch"
    decay = {n: g["weight_decay"] for g in trainer.optimizer.param_groups for n, p in trainer.model.named_parameters()
             if any(p is q for q in g["params"])}
    assert {n: decay[n] for n in GPT2_ROLES} == {
        "transformer.h.0.ln_1.weight": 0.1,
        "transformer.h.0.ln_2.weight": 0.1,
        "transformer.h.1.ln_1.weight": 0.1,
        "transformer.h.1.ln_2.weight": 0.1,
        "transformer.ln_f.weight": 0.0,
    }


def test_a_model_named_by_path_as_in_the_readme(tmp_path):
    # The README's form: SFTTrainer loads the model from its name (here a local folder: the suite is offline).
    _model().save_pretrained(tmp_path / "tiny")
    _tokenizer().save_pretrained(tmp_path / "tiny")
    trainer = GammaRegSFTTrainer(model=str(tmp_path / "tiny"), args=SFTConfig(**_config(tmp_path / "out")),
                                 train_dataset=_dataset())
    trainer.create_optimizer()
    assert trainer.gamma_report.roles == GPT2_ROLES and trainer.gamma_report.unused == []
