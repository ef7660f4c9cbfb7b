"""γ-norm callback and history, plots, saved configs and report, model card, GammaRegConfig validation."""

import json

import pytest
import torch
from models import tiny_hf_resnet
from test_trainer import ALL_GAMMAS, Images, _args

from hf_gammareg import GammaRegConfig, GammaRegTrainer, GammaRegTrainingArguments, GammaReport
from hf_gammareg.cli import main


def _train(tmp_path, policy="guidelines", **kw):
    torch.manual_seed(0)
    model = tiny_hf_resnet("basic")
    args = GammaRegTrainingArguments(**_args(tmp_path, max_steps=4, logging_strategy="steps", logging_steps=2,
                                              learning_rate=0.05, **kw), gamma_policy=policy)
    trainer = GammaRegTrainer(model=model, args=args, train_dataset=Images())
    trainer.train()
    return trainer


def test_callback_logs_per_role_and_grows_history(tmp_path):
    trainer = _train(tmp_path)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2
    for entry in logged:
        for role in ("branch", "invariant", "stream"):
            assert entry[f"gamma/{role}/norm"] > 0 and entry[f"gamma/{role}/abs_mean"] > 0
        assert "gamma/head/norm" not in entry  # ResNet has no head γ
    lines = (tmp_path / "gamma_history.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == [0, 2, 4, 4]  # start, two logging steps, the final summary
    assert records[0]["roles"]["invariant"]["count"] == 2 and records[0]["policy"] == "guidelines"
    # γ start at 1: mean ‖γ‖ of a 16-channel BN is 4, and training moves it
    assert records[0]["roles"]["stream"]["norm"] == pytest.approx((4 + 32 ** 0.5) / 2)
    assert records[-1]["roles"]["branch"]["norm"] != records[0]["roles"]["branch"]["norm"]


def test_callback_can_be_turned_off(tmp_path):
    model = tiny_hf_resnet("basic")
    args = GammaRegTrainingArguments(**_args(tmp_path, max_steps=1), gamma_log_norms=False)
    trainer = GammaRegTrainer(model=model, args=args, train_dataset=Images())
    trainer.train()
    assert not (tmp_path / "gamma_history.jsonl").exists()


def test_plot_one_run_and_comparison(tmp_path):
    _train(tmp_path / "a", policy="guidelines")
    _train(tmp_path / "b", policy="all")
    out = tmp_path / "plots" / "cmp.png"
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert main(["plot", str(tmp_path / "a"), "--out", str(tmp_path / "one.png"), "--stat", "abs_mean"]) == 0
    assert (tmp_path / "one.png").stat().st_size > 10_000


def test_checkpoints_and_final_model_carry_config_and_report(tmp_path):
    trainer = _train(tmp_path, policy="only:branch", save_strategy="steps", save_steps=2)
    trainer.save_model()
    for folder in (tmp_path / "checkpoint-2", tmp_path / "checkpoint-4", tmp_path):
        assert GammaRegConfig.from_pretrained(folder) == GammaRegConfig(policy="only:branch")
        report = GammaReport.from_json((folder / "gamma_report.json").read_text())
        assert set(report.roles) == ALL_GAMMAS


def test_model_card_has_gamma_section(tmp_path):
    trainer = _train(tmp_path)
    trainer.create_model_card(model_name="tiny-resnet")
    card = (tmp_path / "README.md").read_text()
    assert "## γ regularization" in card
    assert "policy `guidelines`, invariance `exact`, decoupled weight decay 0.05 on 4 of 6" in card
    assert "| invariant | 2 | 48 | 2 |" in card  # 16 + 32 channels
    assert "| stream | 2 | 48 | 0 |" in card
    trainer.create_model_card(model_name="tiny-resnet")  # idempotent
    assert (tmp_path / "README.md").read_text().count("## γ regularization") == 1


# -- GammaRegConfig --------------------------------------------------------------------------------
def test_config_round_trip(tmp_path):
    cfg = GammaRegConfig(policy="branch,invariant", gamma_weight_decay=0.1, invariance="approximate",
                         include=["^a"], exclude=["b$"], regularization="l2")
    cfg.save_pretrained(tmp_path)
    assert GammaRegConfig.from_pretrained(tmp_path) == cfg
    assert GammaRegConfig.from_pretrained(tmp_path / "gammareg_config.json") == cfg


@pytest.mark.parametrize(
    "content,match",
    [
        ('{"policy": "guidelines", "evil": 1}', r"unknown field\(s\) \['evil'\]"),
        ('{"policy": 3}', "policy: expected a string"),
        ('{"policy": "only:trunk"}', "policy: unknown gamma policy"),
        ('{"gamma_weight_decay": "0.1"}', "gamma_weight_decay: expected a number"),
        ('{"gamma_weight_decay": -0.5}', "gamma_weight_decay: must be a finite number >= 0"),
        ('{"invariance": "fuzzy"}', "invariance: must be one of"),
        ('{"include": "abc"}', "include: expected a list of strings"),
        ('{"exclude": ["(unclosed"]}', "exclude: invalid regular expression"),
        ('{"regularization": "l1"}', "regularization: must be one of"),
        ('["not", "an", "object"]', "must hold a JSON object"),
        ("{not json", "is not valid JSON"),
        ('{"policy": "' + "x" * 5000 + '"}', "policy: 5000 characters is too long"),
        ('{"include": ["' + "a" * 2000 + '"]}', "longer than 1000"),
    ],
)
def test_config_validation_names_the_field(tmp_path, content, match):
    (tmp_path / "gammareg_config.json").write_text(content)
    with pytest.raises(ValueError, match=match):
        GammaRegConfig.from_pretrained(tmp_path)


def test_config_from_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="no gammareg_config.json"):
        GammaRegConfig.from_pretrained(tmp_path)


def test_config_from_hub_repo_id_reads_json_only(tmp_path, monkeypatch):
    import huggingface_hub

    (tmp_path / "gammareg_config.json").write_text('{"policy": "only:branch", "gamma_weight_decay": 0.2}')
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    cfg = GammaRegConfig.from_pretrained("someone/some-model", revision="main")
    assert cfg == GammaRegConfig(policy="only:branch", gamma_weight_decay=0.2)
    assert calls == [("someone/some-model", "gammareg_config.json", {"revision": "main"})]
    (tmp_path / "gammareg_config.json").write_text('{"policy": "only:branch", "pickle": "cos\\nsystem"}')
    with pytest.raises(ValueError, match="unknown field"):
        GammaRegConfig.from_pretrained("someone/some-model")
