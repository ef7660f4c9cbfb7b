"""The last pass for a model on ``meta``: a CPU copy with real (random, seeded) values, for a forward that sizes
tensors from values computed from its activations, which a meta pass does not have.

Every expected role table is written by hand from ../shared/DESIGN.md (§ Roles, § Reference classifications)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from hf_gammareg import GammaAnalysisError, classify_gammas
from hf_gammareg.analysis import classify, materialize


class Durations(nn.Module):
    """Token embeddings, one pre-LN residual block, a duration predictor whose rounded outputs repeat each token
    (``repeat_interleave`` by predicted durations, as FastSpeech 2's length regulator does), a final norm, a head.
    The number of rows after the repeat is a value of the activations: meta has no such value."""

    def __init__(self, width: int = 8, vocab: int = 11):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.norm1 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)
        self.duration = nn.Linear(width, 1)
        self.norm_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, input_ids):
        h = self.embed(input_ids)
        h = h + self.fc(self.norm1(h))  # the stream h (an ancestor of norm1) meets norm1's branch
        repeats = self.duration(h).squeeze(-1).round().long().clamp(1, 3)  # integers: no gradient flows here
        h = torch.repeat_interleave(h.reshape(-1, h.shape[-1]), repeats.reshape(-1), dim=0)
        return self.head(self.norm_f(h))


# DESIGN.md § Roles: a pre-LN block norm meets its first mixing addition on the branch side (the other operand is the
# stream it started from) → branch; the final norm reaches the output without meeting an independent signal → head.
DURATIONS_ROLES = {"norm1.weight": "branch", "norm_f.weight": "head"}


def _on_meta(build):
    with torch.device("meta"):
        return build()


def test_forward_sized_by_predicted_durations_classifies_on_a_cpu_copy():
    torch.manual_seed(123)
    model = _on_meta(Durations)
    state = torch.get_rng_state()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = classify_gammas(model)
    assert report.roles == DURATIONS_ROLES
    assert report.device == "cpu"
    assert torch.equal(torch.get_rng_state(), state)  # the copy's values were drawn in a forked RNG
    assert all(p.is_meta for p in model.parameters())  # the model itself is unchanged
    copied = [w for w in caught if "CPU copy" in str(w.message)]
    assert len(copied) == 1 and copied[0].filename == __file__  # one warning, pointing at the caller's line
    text = str(copied[0].message)
    assert "read on a CPU copy with random weights" in text
    assert "repeat_interleave a meta tensor" in text  # the model's own meta exception


def test_the_same_forward_with_user_inputs_on_meta():
    model = _on_meta(Durations)
    batch = {"input_ids": torch.tensor([[1, 2, 3, 4]])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = classify_gammas(model, inputs=batch)
    assert report.roles == DURATIONS_ROLES
    assert report.inputs_source == "user inputs"


def test_user_inputs_that_fail_on_the_cpu_copy_too_name_that_pass_first():
    model = _on_meta(Durations)
    batch = {"input_ids": torch.tensor([[1, 2, 99]])}  # 99: past the vocabulary of 11
    with pytest.raises(GammaAnalysisError) as info:
        classify_gammas(model, inputs=batch)
    text = str(info.value)
    assert "on the batch given as inputs= ({input_ids [1, 3]}): on a CPU copy it raised IndexError" in text
    assert "(and on meta: RuntimeError: cannot repeat_interleave a meta tensor" in text  # the meta pass's own


def test_a_copy_over_the_size_limit_is_not_made_and_the_error_says_so(monkeypatch):
    monkeypatch.setattr(materialize, "MAX_CPU_COPY_BYTES", 1024)
    model = _on_meta(Durations)  # 8·11 + 4·8 + 8·8 + 8 + 8 + 8·11 + 11 + … floats: well over 1 KiB
    with pytest.raises(GammaAnalysisError) as info:
        classify_gammas(model)
    text = str(info.value)
    assert "was not made: it would hold" in text and "over the 1 KiB the analysis allocates on its own" in text
    assert "MAX_CPU_COPY_BYTES" in text
    assert "repeat_interleave a meta tensor" in text  # the model's own exception
    assert "Pass `inputs=`" in text


def test_switch_transformers_on_meta_classifies_through_the_cpu_copy():
    """Switch Transformers routes each token to an expert by its router's argmax and loops over the experts it
    picked: sizes from values. DESIGN.md § Reference classifications, T5 (pre-RMSNorm): every block ``layer_norm``
    and ``encoder.final_layer_norm`` → branch; ``decoder.final_layer_norm`` → head."""
    from transformers import SwitchTransformersConfig, SwitchTransformersModel

    config = SwitchTransformersConfig(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_decoder_layers=2,
                                      num_heads=2, num_experts=2, encoder_sparse_step=1, decoder_sparse_step=1)
    model = _on_meta(lambda: SwitchTransformersModel(config))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = classify_gammas(model)
    expected = {f"encoder.block.{i}.layer.{j}.layer_norm.weight": "branch" for i in range(2) for j in range(2)}
    expected["encoder.final_layer_norm.weight"] = "branch"
    expected.update({f"decoder.block.{i}.layer.{j}.layer_norm.weight": "branch" for i in range(2) for j in range(3)})
    expected["decoder.final_layer_norm.weight"] = "head"
    assert report.roles == expected
    assert report.device == "cpu"
    assert any("CPU copy" in str(w.message) and "expert_tensor" in str(w.message) for w in caught)


def _tiny_configs():
    from transformers import BertConfig, LlamaConfig, MixtralConfig

    llama = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=40, vocab_size=64)
    bert = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=64)
    mixtral = MixtralConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=40, vocab_size=64, num_local_experts=4, num_experts_per_tok=2)
    return {"llama": llama, "bert": bert, "mixtral": mixtral}


# DESIGN.md § Reference classifications. Llama (and Mixtral, Llama's blocks with a routed MLP): every
# input_layernorm / post_attention_layernorm → branch, the final norm → head. BERT (post-LN, exact): the embeddings
# LayerNorm, each attention.output.LayerNorm and each output.LayerNorm but the last → stream; the last → head.
_LLAMA_LIKE = {**{f"layers.{i}.{n}.weight": "branch" for i in range(2)
                  for n in ("input_layernorm", "post_attention_layernorm")}, "norm.weight": "head"}
EXPECTED = {
    "llama": _LLAMA_LIKE,
    "mixtral": _LLAMA_LIKE,
    "bert": {"embeddings.LayerNorm.weight": "stream", "encoder.layer.0.attention.output.LayerNorm.weight": "stream",
             "encoder.layer.0.output.LayerNorm.weight": "stream",
             "encoder.layer.1.attention.output.LayerNorm.weight": "stream",
             "encoder.layer.1.output.LayerNorm.weight": "head"},
}




@pytest.mark.parametrize("name", ["llama", "bert", "mixtral"])
def test_roles_on_a_forced_cpu_copy_equal_the_meta_roles(name, monkeypatch):
    from transformers import AutoModel

    config = _tiny_configs()[name]
    model = _on_meta(lambda: AutoModel.from_config(config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        on_meta = classify_gammas(model)
        real_forward = classify.record_forward

        def meta_fails(run_model, batch, device, original=None):  # every pass on meta fails, as a routed MoE's does
            if torch.device(device).type == "meta":
                raise RuntimeError("forced: no pass on meta")
            return real_forward(run_model, batch, device, original=original)

        monkeypatch.setattr(classify, "record_forward", meta_fails)
        on_cpu = classify_gammas(model)
    assert (on_meta.device, on_cpu.device) == ("meta", "cpu")
    assert on_meta.roles == EXPECTED[name]
    assert on_cpu.roles == on_meta.roles
    assert on_cpu.decay_names("guidelines") == on_meta.decay_names("guidelines")


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_cpu_copy_buffers_are_the_models_own_computed_constants(name):
    """Non-persistent buffers (Llama's rotary ``inv_freq``, BERT's ``position_ids``) come out of the copy's own
    initialization as the model built on the CPU computes them at construction."""
    from transformers import AutoModel

    config = _tiny_configs()[name]
    built = AutoModel.from_config(config)
    copy = materialize.cpu_copy(_on_meta(lambda: AutoModel.from_config(config)))
    buffers = dict(copy.named_buffers())
    assert set(buffers) == set(dict(built.named_buffers())) and buffers
    for key, value in built.named_buffers():
        assert torch.equal(buffers[key], value), key
    for key, p in copy.named_parameters():
        assert p.device.type == "cpu" and torch.isfinite(p).all(), key
    # Norms start at ones, as the model's own init sets them.
    norm = next(p for k, p in copy.named_parameters() if k.endswith(("norm.weight", "LayerNorm.weight")))
    assert torch.equal(norm, torch.ones_like(norm))


def test_cpu_copy_keeps_tied_weights_tied_and_leaves_no_value_unset():
    from transformers import LlamaForCausalLM

    config = _tiny_configs()["llama"]
    config.tie_word_embeddings = True
    model = _on_meta(lambda: LlamaForCausalLM(config))
    model.extra = nn.Parameter(torch.empty(5, device="meta"))  # a parameter no init knows
    copy = materialize.cpu_copy(model)
    assert copy.lm_head.weight is copy.model.embed_tokens.weight
    assert torch.isfinite(copy.extra).all() and copy.extra.abs().max() > 0  # small random values, not NaN or zeros
    assert model.extra.is_meta
