"""Models whose forward no dummy batch fits: GammaRegTrainer reads the roles from its own training data.

Each model trains under `transformers.Trainer` as given; swapped for `GammaRegTrainer` with no extra argument it
trains too, bit-identically under ``hf-default``, and under ``guidelines`` its roles are the hand-written table
below (worked out from docs/design.md, never from this code) and its optimizer groups follow them.
"""

import random

import numpy as np
import pytest
import torch
from models import Conditioned, tiny_blip2, tiny_code_predictor, tiny_gpt2, tiny_llava, tiny_lxmert, tiny_qwen2_audio
from torch.utils.data import Dataset, IterableDataset
from transformers import Trainer, TrainingArguments

from hf_gammareg import GammaAnalysisError, GammaRegTrainer, GammaRegTrainingArguments, GammaReport, classify_gammas

B = "branch"
S = "stream"
H = "head"
INV = "invariant"
UNUSED = "unused"


class Rows(Dataset):
    """A map-style dataset of dict rows (what a tokenized/processed `datasets.Dataset` yields, as tensors)."""

    def __init__(self, rows):
        self.rows = rows
        self.reads = 0

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        self.reads += 1
        return self.rows[i]


def _rows(n, make):
    g = torch.Generator().manual_seed(0)
    return Rows([make(g) for _ in range(n)])


def conditioned_rows(g):
    return {"features": torch.randn(6, generator=g), "condition": torch.randn(3, generator=g),
            "labels": torch.randint(0, 2, (), generator=g)}


def image_text_rows(n_image_tokens, length=10, image_token=39):
    def make(g):
        ids = torch.randint(2, 30, (length,), generator=g)
        ids[1:1 + n_image_tokens] = image_token  # the placeholders the projected image features replace
        labels = ids.clone()
        labels[ids == image_token] = -100
        return {"input_ids": ids, "attention_mask": torch.ones(length, dtype=torch.long),
                "pixel_values": torch.randn(3, 16, 16, generator=g), "labels": labels}
    return make


def audio_text_rows(g):
    ids = torch.randint(2, 30, (12,), generator=g)
    ids[1:9] = 39  # 32 frames: conv stride 2 → 16, pooling stride 2 → 8 audio tokens
    labels = ids.clone()
    labels[ids == 39] = -100
    return {"input_ids": ids, "attention_mask": torch.ones(12, dtype=torch.long),
            "input_features": torch.randn(8, 32, generator=g),
            "feature_attention_mask": torch.ones(32, dtype=torch.long), "labels": labels}


def region_rows(g):
    return {"input_ids": torch.randint(0, 40, (7,), generator=g), "attention_mask": torch.ones(7, dtype=torch.long),
            "visual_feats": torch.randn(5, 12, generator=g), "visual_pos": torch.rand(5, 4, generator=g),
            "labels": torch.randint(0, 3, (), generator=g)}


def embedding_rows(g):
    return {"inputs_embeds": torch.randn(4, 16, generator=g), "labels": torch.randint(0, 40, (4,), generator=g)}


# Hand-written from docs/design.md (exact mode). Why each role, briefly:
CASES = {
    # stem_norm meets `+ cond(condition)`: two inputs summed → fusion → stream; block_norm feeds the residual
    # branch → branch; final_norm reaches the loss → head.
    "conditioned": (Conditioned, lambda: _rows(8, conditioned_rows), {
        "stem_norm.weight": S, "block_norm.weight": B, "final_norm.weight": H}),
    # CLIP tower, pre-LN: pre_layrnorm is the stream its block's branch grows from → stream; layer_norm1/2 →
    # branch. vision_feature_layer=-1 takes the last layer's output before post_layernorm, which only the pooled
    # output (not in the loss) sees → unused. Llama: per-layer norms branch, final norm head.
    "llava": (tiny_llava, lambda: _rows(8, image_text_rows(4)), {
        "model.vision_tower.pre_layrnorm.weight": S,
        "model.vision_tower.encoder.layers.0.layer_norm1.weight": B,
        "model.vision_tower.encoder.layers.0.layer_norm2.weight": B,
        "model.vision_tower.post_layernorm.weight": UNUSED,
        "model.language_model.layers.0.input_layernorm.weight": B,
        "model.language_model.layers.0.post_attention_layernorm.weight": B,
        "model.language_model.norm.weight": H}),
    # BLIP-2. Vision, pre-LN: layer_norm1/2 → branch. post_layernorm feeds the Q-Former cross-attention K/V; its
    # output is added to the query stream, which is computed from the query-token parameters alone — a bias, not an
    # independent signal ("Readings settled") — and then renormalized by crossattention.output.LayerNorm → invariant.
    # Q-Former, post-LN: each norm meets its next residual add on the stream side, the branch depending on it only
    # through softmax/GELU after ≥ 1 matrix op → stream; output_query.LayerNorm becomes OPT's input stream (at the
    # image tokens) → stream. OPT, pre-LN: per-layer norms branch, final norm head.
    "blip2": (tiny_blip2, lambda: _rows(8, image_text_rows(4)), {
        "vision_model.encoder.layers.0.layer_norm1.weight": B,
        "vision_model.encoder.layers.0.layer_norm2.weight": B,
        "vision_model.post_layernorm.weight": INV,
        "qformer.layernorm.weight": S,
        "qformer.encoder.layer.0.attention.output.LayerNorm.weight": S,
        "qformer.encoder.layer.0.crossattention.output.LayerNorm.weight": S,
        "qformer.encoder.layer.0.output_query.LayerNorm.weight": S,
        "language_model.model.decoder.layers.0.self_attn_layer_norm.weight": B,
        "language_model.model.decoder.layers.0.final_layer_norm.weight": B,
        "language_model.model.decoder.final_layer_norm.weight": H}),
    # Whisper-style encoder, pre-LN: per-layer norms branch; its final layer_norm, projected, is the text model's
    # input stream at the audio tokens → stream. Qwen2: branch, branch, head.
    "qwen2_audio": (tiny_qwen2_audio, lambda: _rows(8, audio_text_rows), {
        "model.audio_tower.layers.0.self_attn_layer_norm.weight": B,
        "model.audio_tower.layers.0.final_layer_norm.weight": B,
        "model.audio_tower.layer_norm.weight": S,
        "model.language_model.layers.0.input_layernorm.weight": B,
        "model.language_model.layers.0.post_attention_layernorm.weight": B,
        "model.language_model.norm.weight": H}),
    # LXMERT (post-LN everywhere, exact mode). visn_layer_norm and box_layer_norm are summed, (x + y) / 2: two
    # inputs fused → stream. The language and vision post-LN norms each meet their next residual add on the stream
    # side → stream — except the vision stream's last norm (r_layers.0.output), whose first add is in the
    # cross-attention of the language side (it gives K/V; the other operand is the language stream) → branch. The
    # shared visual_attention norm: only its language-side call reaches the loss → stream. The last language norm
    # (x_layers.0.lang_output) reaches the loss only through the answer head's LayerNorm → invariant; that norm →
    # head. The vision side of the cross layer feeds only `vision_output`, which the QA loss does not use → unused.
    "lxmert": (tiny_lxmert, lambda: _rows(8, region_rows), {
        "lxmert.embeddings.LayerNorm.weight": S,
        "lxmert.encoder.visn_fc.visn_layer_norm.weight": S,
        "lxmert.encoder.visn_fc.box_layer_norm.weight": S,
        "lxmert.encoder.layer.0.attention.output.LayerNorm.weight": S,
        "lxmert.encoder.layer.0.output.LayerNorm.weight": S,
        "lxmert.encoder.x_layers.0.visual_attention.output.LayerNorm.weight": S,
        "lxmert.encoder.x_layers.0.lang_self_att.output.LayerNorm.weight": S,
        "lxmert.encoder.x_layers.0.visn_self_att.output.LayerNorm.weight": UNUSED,
        "lxmert.encoder.x_layers.0.lang_output.LayerNorm.weight": INV,
        "lxmert.encoder.x_layers.0.visn_output.LayerNorm.weight": UNUSED,
        "lxmert.encoder.r_layers.0.attention.output.LayerNorm.weight": S,
        "lxmert.encoder.r_layers.0.output.LayerNorm.weight": B,
        "answer_head.logit_fc.2.weight": H}),
    # Qwen3 decoder on inputs_embeds: q_norm/k_norm scale the attention branch → branch; per-layer norms branch;
    # final norm head.
    "code_predictor": (tiny_code_predictor, lambda: _rows(8, embedding_rows), {
        "model.layers.0.self_attn.q_norm.weight": B,
        "model.layers.0.self_attn.k_norm.weight": B,
        "model.layers.0.input_layernorm.weight": B,
        "model.layers.0.post_attention_layernorm.weight": B,
        "model.norm.weight": H}),
}


def _args(tmp_path, **kw):
    base = {"output_dir": str(tmp_path), "report_to": "none", "weight_decay": 0.05, "per_device_train_batch_size": 2,
            "use_cpu": True, "save_strategy": "no", "logging_strategy": "no", "seed": 0, "disable_tqdm": True,
            "max_steps": 2, "learning_rate": 1e-2}
    base.update(kw)
    return base


def _train(trainer_cls, make_model, dataset, args):
    torch.manual_seed(0)
    model = make_model()
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset)
    trainer.train()
    return trainer, {n: p.detach().clone() for n, p in model.named_parameters()}


def _role_table(report: GammaReport) -> dict[str, str]:
    return {n: report.role_of(n) for n in report.gammas}


@pytest.mark.parametrize("case", list(CASES))
def test_trains_as_trainer_does_and_reads_roles_from_the_training_batch(tmp_path, case):
    make_model, make_data, expected = CASES[case]
    _, plain = _train(Trainer, make_model, make_data(), TrainingArguments(**_args(tmp_path / "plain")))
    trainer, same = _train(GammaRegTrainer, make_model, make_data(),
                           GammaRegTrainingArguments(**_args(tmp_path / "hf"), gamma_policy="hf-default"))
    for name, value in plain.items():
        assert torch.equal(value, same[name]), name  # hf-default: bit-identical to Trainer
    assert trainer.gamma_report.inputs_source == "training batch"

    trainer, _ = _train(GammaRegTrainer, make_model, make_data(), GammaRegTrainingArguments(**_args(tmp_path / "g")))
    report = trainer.gamma_report
    assert _role_table(report) == expected
    assert report.inputs_source == "training batch" and report.inputs_shapes
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    decay = {names[id(p)]: g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    for name, role in expected.items():
        # branch/invariant decayed; stream/head not; an unused γ follows Trainer's rule, which never decays a norm
        assert decay[name] == (0.05 if role in (B, INV) else 0.0), (name, role)
    assert "first batch of the training data" in trainer.gamma_table()


def test_without_training_data_dummy_inputs_fail_or_miss_a_tower():
    # What the training batch buys: on dummy inputs the user model and the inputs_embeds decoder do not run at all,
    # and Qwen2-Audio's dummy batch (text only) never reaches the audio tower — which one warning says.
    with pytest.raises(GammaAnalysisError, match="Tried 1 dummy batch"):
        classify_gammas(Conditioned())
    with pytest.raises(GammaAnalysisError, match="could not run Qwen3OmniMoeTalkerCodePredictor"):
        classify_gammas(tiny_code_predictor())
    with pytest.warns(UserWarning,
                      match=r"3 of 6 γ did not take part in the forward on dummy inputs.*model\.audio_tower"):
        report = classify_gammas(tiny_qwen2_audio())
    assert report.unused == ["model.audio_tower.layers.0.self_attn_layer_norm.weight",
                             "model.audio_tower.layers.0.final_layer_norm.weight",
                             "model.audio_tower.layer_norm.weight"]


@pytest.mark.parametrize("case", ["llava", "blip2", "lxmert"])
def test_dummy_inputs_now_reach_these_towers(case):
    # Dummy inputs grown for them: LLaVA's text gets as many image tokens as its tower says it
    # emits, BLIP-2 gets text beside its pixels, LXMERT its region features and boxes. Same hand-written tables.
    make_model, _, expected = CASES[case]
    report = classify_gammas(make_model())
    assert report.inputs_source == "dummy" and _role_table(report) == expected


# -- what training sees does not change ----------------------------------------------------------------------
class MaskingCollator:
    """Draws from every RNG a collator might (torch, NumPy, Python, and generators of its own), as a random-masking
    MLM collator or an augmenting one does."""

    def __init__(self):
        self.generator = torch.Generator().manual_seed(1)
        self.rng = np.random.default_rng(2)

    def __call__(self, rows):
        batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
        noise = torch.rand(batch["features"].shape) * float(np.random.rand()) * random.random()
        noise = noise + torch.rand(batch["features"].shape, generator=self.generator) * float(self.rng.random())
        batch["features"] = batch["features"] + noise
        return batch


def test_random_collator_and_gradient_accumulation_stay_bit_identical(tmp_path):
    kw = {"gradient_accumulation_steps": 2, "max_steps": 3}
    results = []
    for cls, args_cls in ((Trainer, TrainingArguments), (GammaRegTrainer, GammaRegTrainingArguments)):
        torch.manual_seed(0)
        model = Conditioned()
        extra = {"gamma_policy": "hf-default"} if cls is GammaRegTrainer else {}
        trainer = cls(model=model, args=args_cls(**_args(tmp_path / cls.__name__, **kw), **extra),
                      train_dataset=_rows(16, conditioned_rows), data_collator=MaskingCollator())
        trainer.train()
        results.append({n: p.detach().clone() for n, p in model.named_parameters()})
        if cls is GammaRegTrainer:
            assert trainer.gamma_report.inputs_source == "training batch"
    for name, value in results[0].items():
        assert torch.equal(value, results[1][name]), name


def test_hf_dataset_columns_are_filtered_as_training_filters_them(tmp_path):
    datasets = pytest.importorskip("datasets")
    g = torch.Generator().manual_seed(0)
    data = datasets.Dataset.from_dict({
        "features": torch.randn(8, 6, generator=g).tolist(), "condition": torch.randn(8, 3, generator=g).tolist(),
        "labels": [0, 1] * 4, "text": ["a raw column the model does not take"] * 8}).with_format("torch")
    trainer = GammaRegTrainer(model=Conditioned(), args=GammaRegTrainingArguments(**_args(tmp_path)),
                              train_dataset=data)
    trainer.train()
    assert trainer.gamma_report.inputs_source == "training batch"
    assert trainer.gamma_report.inputs_shapes == {"features": [2, 6], "condition": [2, 3], "labels": [2]}
    assert trainer.gamma_report.roles["stem_norm.weight"] == S


class Stream(IterableDataset):
    """A stream that counts how often it is opened and how many examples it hands out."""

    def __init__(self, n=16):
        self.opened = 0
        self.served = 0
        self.n = n

    def __iter__(self):
        self.opened += 1
        g = torch.Generator().manual_seed(0)
        for _ in range(self.n):
            self.served += 1
            yield conditioned_rows(g)


def test_a_stream_is_never_read_ahead(tmp_path):
    # A model the dummy batch fits: the stream is left alone and the roles come from dummy inputs.
    def ids_stream():
        class Ids(Stream):
            def __iter__(self):
                self.opened += 1
                for i in range(self.n):
                    self.served += 1
                    ids = torch.arange(6) + i
                    yield {"input_ids": ids, "labels": ids}
        return Ids()

    counts = []
    for cls, args_cls in ((Trainer, TrainingArguments), (GammaRegTrainer, GammaRegTrainingArguments)):
        stream = ids_stream()
        cls(model=tiny_gpt2(), args=args_cls(**_args(tmp_path / cls.__name__)), train_dataset=stream).train()
        counts.append((stream.opened, stream.served))
    assert counts[0] == counts[1]  # exactly what plain Trainer read

    # A model that needs a real batch: one clear error naming the remedies, before any example is read.
    stream = Stream()
    trainer = GammaRegTrainer(model=Conditioned(), args=GammaRegTrainingArguments(**_args(tmp_path / "c")),
                              train_dataset=stream)
    with pytest.raises(GammaAnalysisError, match="IterableDataset") as info:
        trainer.train()
    assert "gamma_inputs=" in str(info.value) and "gamma_report=" in str(info.value)
    assert (stream.opened, stream.served) == (0, 0)

    # The remedy: one batch of the stream's kind, given by the user.
    batch = {"features": torch.randn(2, 6), "condition": torch.randn(2, 3), "labels": torch.tensor([0, 1])}
    trainer = GammaRegTrainer(model=Conditioned(), args=GammaRegTrainingArguments(**_args(tmp_path / "d")),
                              train_dataset=Stream(), gamma_inputs=batch)
    trainer.train()
    assert trainer.gamma_report.inputs_source == "user inputs"
    assert trainer.gamma_report.roles == {"stem_norm.weight": S, "block_norm.weight": B, "final_norm.weight": H}


def test_a_first_batch_the_model_rejects_gets_one_error_with_both_remedies(tmp_path):
    bad = Rows([{"features": torch.randn(5), "condition": torch.randn(3), "labels": torch.tensor(0)}] * 4)  # 5 ≠ 6
    trainer = GammaRegTrainer(model=Conditioned(), args=GammaRegTrainingArguments(**_args(tmp_path)), train_dataset=bad)
    with pytest.raises(GammaAnalysisError) as info:
        trainer.train()
    text = str(info.value)
    assert "first training batch (features [2, 5], condition [2, 3], labels [2])" in text
    # The model's own exception is the first error quoted; no dummy retry is listed, as `forward(features, condition)`
    # can take no dummy batch.
    assert text.index("mat1 and mat2 shapes cannot be multiplied") < text.index("Remedies")
    assert "dummy" not in text and "gamma_inputs=" in text and "gamma_report=" in text
    assert bad.reads == 2  # the two rows of one batch, nothing more


def test_an_empty_dataset_falls_back_to_dummy_inputs_or_says_it_is_empty(tmp_path):
    trainer = GammaRegTrainer(model=tiny_gpt2(), args=GammaRegTrainingArguments(**_args(tmp_path)),
                              train_dataset=Rows([]))
    trainer.create_optimizer()
    assert trainer.gamma_report.inputs_source == "dummy"
    assert "dummy inputs" in trainer.gamma_table()
    trainer = GammaRegTrainer(model=Conditioned(), args=GammaRegTrainingArguments(**_args(tmp_path)),
                              train_dataset=Rows([]))
    with pytest.raises(GammaAnalysisError, match="train_dataset is empty"):
        trainer.create_optimizer()


def test_old_report_json_still_loads_and_says_it_does_not_know(tmp_path):
    old = ('{"roles": {"a.weight": "branch"}, "reasons": {"a.weight": "r"}, "norm_types": {"a.weight": "LayerNorm"}, '
           '"invariance": "exact"}')
    report = GammaReport.from_json(old)
    assert report.inputs_source == "" and "does not record" in report.inputs_line()
    assert GammaReport.from_json(classify_gammas(tiny_gpt2()).to_json()).inputs_source == "dummy"


def test_model_card_names_the_inputs(tmp_path):
    def ids(g):
        x = torch.randint(0, 64, (6,), generator=g)
        return {"input_ids": x, "labels": x}

    trainer, _ = _train(GammaRegTrainer, tiny_gpt2, _rows(8, ids), GammaRegTrainingArguments(**_args(tmp_path)))
    trainer.create_model_card()
    card = (tmp_path / "README.md").read_text()
    assert "Roles read from the first batch of the training data" in card


def test_a_codec_is_read_from_its_first_differentiable_output():
    # Mimi / X-Codec return integer codes first: the dataflow is read from the decoded values, not refused.
    class Codec(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.norm, self.dec = torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 4)

        def forward(self, input_values):
            h = self.norm(self.enc(input_values))
            return {"audio_codes": h.argmax(-1), "audio_values": self.dec(h)}

    report = classify_gammas(Codec(), inputs={"input_values": torch.randn(2, 4)})
    assert report.roles == {"norm.weight": H} and "`audio_values`" in report.reasons["norm.weight"]


def test_gamma_report_and_gamma_inputs_together_are_refused(tmp_path):
    report = classify_gammas(tiny_gpt2())
    with pytest.raises(ValueError, match="gamma_report= and gamma_inputs=: give one"):
        GammaRegTrainer(model=tiny_gpt2(), args=GammaRegTrainingArguments(**_args(tmp_path)), gamma_report=report,
                        gamma_inputs={"input_ids": torch.ones(2, 4, dtype=torch.long)})


def test_param_groups_take_one_batch_of_the_users_data():
    from hf_gammareg import decay_plan, param_groups

    batch = {"features": torch.randn(2, 6), "condition": torch.randn(2, 3), "labels": torch.tensor([0, 1])}
    model = Conditioned()
    groups = param_groups(model, 0.1, inputs=batch)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    assert "block_norm.weight" in decayed and not {"stem_norm.weight", "final_norm.weight"} & decayed
    plan = decay_plan(model, 0.1, inputs=batch)
    assert plan.report.inputs_source == "user inputs" and plan.report.inputs_shapes["features"] == [2, 6]
    with pytest.raises(ValueError, match="report= and inputs=: give one"):
        param_groups(model, 0.1, inputs=batch, report=plan.report)


def test_a_trainer_with_its_own_train_dataloader_is_not_read_ahead(tmp_path):
    # CifarTrainer-style subclasses build batches their own way (own sampler, own collator generator): what the
    # dataset and data_collator would give is not what training sees, so the dummy batch is used instead.
    class OwnLoader(GammaRegTrainer):
        def get_train_dataloader(self):
            return torch.utils.data.DataLoader(self.train_dataset, batch_size=2)

    def ids(g):
        x = torch.randint(0, 64, (6,), generator=g)
        return {"input_ids": x, "labels": x}

    data = _rows(4, ids)
    trainer = OwnLoader(model=tiny_gpt2(), args=GammaRegTrainingArguments(**_args(tmp_path)), train_dataset=data)
    trainer.create_optimizer()
    assert trainer.gamma_report.inputs_source == "dummy" and data.reads == 0
