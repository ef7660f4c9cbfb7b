"""Offset scales c + w (docs/design.md § Offset scales): read from the graph, recorded, kept by `guidelines`, decayed
when a policy names them, and described as "pulls the scale toward c" everywhere.

The expected tables are written by hand from DESIGN: Gemma's and Nemotron's pre-norm blocks are Llama's (block norms
`branch`, the final norm `head`), every one of their norms applies `1 + w`; Qwen3-Next's RMSNorm applies `1 + w`, its
linear-attention gated norm applies `w` (a plain γ).
"""

import json
import math

import pytest
import torch
from models import decayed_under
from torch import nn

from hf_gammareg import GammaRegConfig, GammaRegTrainer, GammaRegTrainingArguments, GammaReport, classify_gammas
from hf_gammareg.callbacks import gamma_norm_stats
from hf_gammareg.cli import main
from hf_gammareg.decision import decide, decision_summary
from hf_gammareg.hf_rule import hf_default_decay_names
from hf_gammareg.horizon import horizon_lines, planned_decay_horizon

OFFSET_REASON = "offset scale 1 + w: weight decay pulls the scale toward 1, not 0"
LLAMA_LIKE = {  # Gemma, Nemotron (2 layers): the roles of Llama's norms, every one an offset scale 1 + w
    "model.layers.0.input_layernorm.weight": "branch",
    "model.layers.0.post_attention_layernorm.weight": "branch",
    "model.layers.1.input_layernorm.weight": "branch",
    "model.layers.1.post_attention_layernorm.weight": "branch",
    "model.norm.weight": "head",
}


def tiny_gemma_config(**kw):
    from transformers import GemmaConfig

    return GemmaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                       intermediate_size=40, vocab_size=64, **kw)


def tiny_gemma():
    from transformers import GemmaForCausalLM

    torch.manual_seed(0)
    return GemmaForCausalLM(tiny_gemma_config())


def tiny_nemotron():
    from transformers import NemotronConfig, NemotronForCausalLM

    return NemotronForCausalLM(NemotronConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                              num_key_value_heads=2, head_dim=8, intermediate_size=40, vocab_size=64))


def tiny_qwen3_next():
    from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

    return Qwen3NextForCausalLM(Qwen3NextConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        intermediate_size=40, vocab_size=64, layer_types=["linear_attention", "full_attention"],
        linear_num_value_heads=2, linear_num_key_heads=2, linear_key_head_dim=8, linear_value_head_dim=8,
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=16))


# -- hand-written modules ----------------------------------------------------------------------------------------
class RMSNormWith(nn.Module):
    """An RMSNorm whose scale is ``scale(w)``: the forms an offset can take, and forms that are not one."""

    def __init__(self, dim, scale):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.scale = scale

    def forward(self, x):
        return self.scale(x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6), self.weight)


class Residual(nn.Module):
    """``h = x + fc(norm1(x)); out = head(norm2(h))``: norm1 → branch, norm2 → head."""

    def __init__(self, scale1, scale2, dim=8):
        super().__init__()
        self.inp = nn.Linear(4, dim)
        self.norm1 = RMSNormWith(dim, scale1)
        self.fc = nn.Linear(dim, dim)
        self.norm2 = RMSNormWith(dim, scale2)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.inp(x)
        h = x + self.fc(self.norm1(x))
        return self.head(self.norm2(h))


def test_gemma_norms_are_offset_scales_with_their_usual_roles():
    report = classify_gammas(tiny_gemma())
    assert report.roles == LLAMA_LIKE
    assert report.offsets == dict.fromkeys(LLAMA_LIKE, 1.0)
    assert report.reason_of("model.norm.weight").startswith(OFFSET_REASON + "; reaches the output")


def test_nemotron_layer_norm_1p_is_an_offset_scale():
    # LayerNorm1P passes `weight + 1` to F.layer_norm: the multiply is inside the native norm op.
    report = classify_gammas(tiny_nemotron())
    assert report.roles == LLAMA_LIKE
    assert report.offsets == dict.fromkeys(LLAMA_LIKE, 1.0)


def test_moonshine_streaming_norm_is_found_and_is_an_offset_scale():
    # MoonshineStreamingLayerNorm: a parameter-free `nn.LayerNorm` child, then `· (gamma + unit_offset)`; a pre-norm
    # encoder, so its block norms end branches and the final norm is the head.
    from transformers import MoonshineStreamingEncoderConfig
    from transformers.models.moonshine_streaming.modeling_moonshine_streaming import MoonshineStreamingEncoder

    model = MoonshineStreamingEncoder(MoonshineStreamingEncoderConfig(
        hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        sliding_windows=((16, 4), (16, 0))))
    report = classify_gammas(model)
    expected = {"layers.0.input_layernorm.gamma": "branch", "layers.0.post_attention_layernorm.gamma": "branch",
                "layers.1.input_layernorm.gamma": "branch", "layers.1.post_attention_layernorm.gamma": "branch",
                "final_norm.gamma": "head"}
    assert report.roles == expected and report.offsets == dict.fromkeys(expected, 1.0)
    assert report.norm_types["final_norm.gamma"] == "MoonshineStreamingLayerNorm"


def test_qwen3_next_offset_norms_and_its_plain_gated_norm():
    model = tiny_qwen3_next()
    report = classify_gammas(model)
    offset = ["model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
              "model.layers.1.self_attn.q_norm.weight", "model.layers.1.self_attn.k_norm.weight",
              "model.layers.1.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight",
              "model.norm.weight"]
    gated = "model.layers.0.linear_attn.norm.weight"  # Qwen3NextRMSNormGated: `weight * x̂`, a plain γ
    assert report.offsets == dict.fromkeys(offset, 1.0)
    assert set(report.roles) == {gated, *offset}
    # Where the role is plain from DESIGN: the full-attention block's norms and the gated norm end branches.
    for name in (gated, "model.layers.1.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight"):
        assert report.roles[name] == "branch"
    assert report.roles["model.norm.weight"] == "head"
    # guidelines decays the plain branch γ and no offset γ; `all` decays every one.
    assert decayed_under(model, report) == {gated}
    assert decayed_under(model, report, "all") == {gated, *offset}


@pytest.mark.parametrize("scale,offset", [
    (lambda x, w: x * (1 + w), 1.0),
    (lambda x, w: x * (w + 0.5), 0.5),
    (lambda x, w: x * torch.add(w, 1.0), 1.0),
    (lambda x, w: x * (1.0 + w.float()).view(1, -1), 1.0),  # through a cast and a view
])
def test_a_user_module_with_an_offset(scale, offset):
    model = Residual(scale, lambda x, w: x * w)
    report = classify_gammas(model, inputs=torch.randn(2, 4))
    assert report.roles == {"norm1.weight": "branch", "norm2.weight": "head"}
    assert report.offsets == {"norm1.weight": offset}
    assert decayed_under(model, report) == set()
    assert decayed_under(model, report, "only:branch") == {"norm1.weight"}


@pytest.mark.parametrize("scale", [
    lambda x, w: x * w * 2,  # a multiply by a constant is no offset
    lambda x, w: x * (w * 2),
    lambda x, w: x * (1 + w) * w,  # w reaches the multiply directly too
    lambda x, w: x * (0 + w),  # c = 0 is a plain γ
    lambda x, w: x + (1 + w),  # the sum is added, not multiplied: no scale at all
])
def test_not_offsets(scale):
    report = classify_gammas(Residual(scale, lambda x, w: x * w), inputs=torch.randn(2, 4))
    assert report.offsets == {}
    assert "offset" not in report.reason_of("norm1.weight")


class ScaledBareNorm(nn.Module):
    """A parameter-free LayerNorm child, then this module's own scale: a norm whose γ is ``weight``."""

    def __init__(self, dim, offset):
        super().__init__()
        self.ln = nn.LayerNorm(dim, elementwise_affine=False)
        self.weight = nn.Parameter(torch.ones(dim))
        self.offset = offset

    def forward(self, x):
        return self.ln(x) * (self.weight + self.offset if self.offset else self.weight)


@pytest.mark.parametrize("offset,expected", [(0, {}), (1, {"norm1.weight": 1.0})])
def test_a_norm_that_scales_a_parameter_free_child_norm(offset, expected):
    model = Residual(lambda x, w: x, lambda x, w: x * w)
    model.norm1 = ScaledBareNorm(8, offset)
    report = classify_gammas(model, inputs=torch.randn(2, 4))
    assert report.roles == {"norm1.weight": "branch", "norm2.weight": "head"}
    assert report.offsets == expected


def test_models_without_offsets_record_none():
    from models import tiny_gpt2, tiny_llama

    assert classify_gammas(tiny_llama()).offsets == {}
    assert classify_gammas(tiny_gpt2()).offsets == {}


# -- the report and the policies -----------------------------------------------------------------------------------
def test_policies_on_offset_gammas():
    model = tiny_gemma()
    report = classify_gammas(model)
    block = {n for n, r in LLAMA_LIKE.items() if r == "branch"}
    assert decayed_under(model, report) == set()
    assert decayed_under(model, report, "all") == set(LLAMA_LIKE)
    assert decayed_under(model, report, "branch,invariant") == block
    assert decayed_under(model, report, "only:head") == {"model.norm.weight"}
    assert decayed_under(model, report, include=[r"layers\.0\.input"]) == {"model.layers.0.input_layernorm.weight"}
    assert decayed_under(model, report, "all", exclude=["norm"]) == set()
    assert decayed_under(model, report, "hf-default") == set()  # what Trainer does: no norm weight by name
    decisions = decide(report, GammaRegConfig(), hf_default_decay_names(model))
    assert decision_summary(decisions).endswith("; 5 offset scale(s) 1 + w, 0 decayed; policy 'guidelines' decays 0 "
                                                "(0 values)")
    assert {d.by for d in decisions} == {"offset scale"} and all(d.offset == 1.0 for d in decisions)


def test_offsets_round_trip_through_json_and_old_json_loads():
    model = tiny_gemma()
    report = classify_gammas(model)
    again = GammaReport.from_json(report.to_json())
    assert again.offsets == report.offsets and decayed_under(model, again) == set()
    old = json.loads(report.to_json())
    del old["offsets"]
    legacy = GammaReport.from_json(json.dumps(old))
    assert legacy.offsets == {} and decayed_under(model, legacy) == set(n for n, r in LLAMA_LIKE.items()
                                                                        if r == "branch")
    old["offsets"] = {"model.norm.weight": "one"}
    with pytest.raises(ValueError, match="offsets"):
        GammaReport.from_json(json.dumps(old))


def test_gamma_norm_stats_are_of_the_applied_scale():
    model = tiny_gemma()  # Gemma's w start at 0: the scale 1 + w is 1 everywhere
    report = classify_gammas(model)
    stats = gamma_norm_stats(model, report)
    assert stats["branch"]["norm"] == pytest.approx(math.sqrt(32)) and stats["branch"]["abs_mean"] == 1.0
    assert stats["head"]["rms"] == 1.0 and stats["branch"]["count"] == 4
    plain = gamma_norm_stats(model, {"head": ["model.norm.weight"]})  # names alone: the parameter itself
    assert plain["head"]["norm"] == 0.0


# -- horizon lines -------------------------------------------------------------------------------------------------
def test_horizon_lines_say_decay_pulls_offset_scales_toward_c():
    h = planned_decay_horizon(lr=1e-3, weight_decay=0.1, num_steps=10_000, schedule="constant")  # Σ lr·λ = 1
    how = "over 10,000 steps (decoupled decay, Σ lr·λ = 1)"
    line, _ = horizon_lines(h, 5, offsets_decayed=[1.0] * 5)
    assert line == ("decay horizon: weight decay alone pulls the scale of the 5 decayed offset γ (1 + w) toward 1, "
                    f"not 0: w keeps 37 % of its value {how}")
    line, _ = horizon_lines(h, 0, offsets_kept=[1.0] * 5)
    assert line == ("decay horizon: no γ is decayed; weight decay alone would shrink a decayed parameter to 37 % of "
                    f"its value {how}; the 5 offset γ (1 + w) are not decayed: decay would pull their scale toward "
                    "1, not 0")
    line, _ = horizon_lines(h, 3, offsets_decayed=[1.0], offsets_kept=[1.0] * 4)
    assert line == (f"decay horizon: weight decay alone shrinks the 2 decayed γ to 37 % of their value {how}; on the "
                    "1 decayed offset γ (1 + w) it pulls the scale toward 1, not 0; the 4 offset γ (1 + w) are not "
                    "decayed: decay would pull their scale toward 1, not 0")
    assert horizon_lines(h, 2) == (f"decay horizon: weight decay alone shrinks the 2 decayed γ to 37 % of their value "
                                   f"{how}", None)  # no offsets: as before


# -- GammaRegTrainer -------------------------------------------------------------------------------------------------
class Tokens(torch.utils.data.Dataset):
    def __init__(self, n=8):
        self.ids = torch.randint(0, 64, (n, 8), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _trainer(tmp_path, policy, **kw):
    kw = {"max_steps": 1000, **kw}
    args = GammaRegTrainingArguments(output_dir=str(tmp_path), report_to="none", weight_decay=0.1, learning_rate=1e-3,
                                     per_device_train_batch_size=4, use_cpu=True, save_strategy="no", seed=0,
                                     disable_tqdm=True, lr_scheduler_type="constant", gamma_policy=policy, **kw)
    return GammaRegTrainer(model=tiny_gemma(), args=args, train_dataset=Tokens())


def _gamma_decay(trainer):
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    return {names[id(p)]: g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]
            if names[id(p)] in LLAMA_LIKE}


def test_trainer_guidelines_decays_no_offset_gamma_and_says_why(tmp_path):
    trainer = _trainer(tmp_path, "guidelines")
    trainer.create_optimizer()
    assert _gamma_decay(trainer) == dict.fromkeys(LLAMA_LIKE, 0.0)
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.1 and trainer.optimizer.param_groups[0]["params"]
    table = trainer.gamma_table()
    assert table.count(OFFSET_REASON) == 5
    assert ("the 5 offset γ (1 + w) are not decayed: decay would pull their scale toward 1, not 0") in table
    assert ("! policy 'guidelines' decays none of the 5 γ — the same split as transformers.Trainer (hf-default); its 4 "
            "branch/invariant γ are offset scales (1 + w), which it keeps: weight decay pulls their scale toward 1, "
            "not 0. gamma_policy='all' or gamma_include decays them.") in table


def test_trainer_all_decays_offset_gammas_and_never_says_shrinks(tmp_path):
    trainer = _trainer(tmp_path, "all")
    trainer.create_optimizer()
    assert _gamma_decay(trainer) == dict.fromkeys(LLAMA_LIKE, 0.1)
    table = trainer.gamma_table()
    assert ("decay horizon: weight decay alone pulls the scale of the 5 decayed offset γ (1 + w) toward 1, not 0: "
            "w keeps 90 % of its value over 1,000 steps (decoupled decay, Σ lr·λ = 0.1)") in table
    assert "shrink" not in table


def test_trainer_logs_the_applied_scale_and_the_card_says_what_decay_does(tmp_path):
    trainer = _trainer(tmp_path, "all", max_steps=2, logging_strategy="steps", logging_steps=1)
    trainer.train()
    first = json.loads((tmp_path / "gamma_history.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0 and first["roles"]["head"]["norm"] == pytest.approx(math.sqrt(32))  # ‖1 + 0‖
    trainer.create_model_card(model_name="tiny-gemma")
    card = (tmp_path / "README.md").read_text()
    assert ("5 of these γ are offset scales 1 + w: weight decay pulls their scale toward 1, not 0 (5 of them "
            "decayed).") in card
    assert "Decay horizon: weight decay alone pulls the scale of the 5 decayed offset γ (1 + w) toward 1" in card


# -- the CLI -------------------------------------------------------------------------------------------------------
def test_inspect_a_gemma_config_names_the_offsets_and_what_decay_does(tmp_path, capsys):
    tiny_gemma_config(architectures=["GemmaForCausalLM"]).save_pretrained(tmp_path)
    horizon = ["--lr", "1e-3", "--weight-decay", "0.1", "--steps", "10000", "--schedule", "constant"]
    assert main(["inspect", str(tmp_path), "--wide", *horizon]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split(None, 4) for line in out if line.startswith("model.")}
    assert {n: r[2:4] for n, r in rows.items()} == {n: [role, "no"] for n, role in LLAMA_LIKE.items()}
    assert all(r[4].startswith(OFFSET_REASON) for r in rows.values())
    assert out[-1] == ("decay horizon: no γ is decayed; weight decay alone would shrink a decayed parameter to 37 % of "
                       "its value over 10,000 steps (decoupled decay, Σ lr·λ = 1); the 5 offset γ (1 + w) are not "
                       "decayed: decay would pull their scale toward 1, not 0")
    assert main(["inspect", str(tmp_path), "--wide", "--policy", "all", *horizon]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == ("decay horizon: weight decay alone pulls the scale of the 5 decayed offset γ (1 + w) toward 1, "
                       "not 0: w keeps 37 % of its value over 10,000 steps (decoupled decay, Σ lr·λ = 1)")
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["offsets"] == dict.fromkeys(LLAMA_LIKE, 1.0)
