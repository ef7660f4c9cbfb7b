"""`hf-gammareg inspect` and `plot`: offline on embedded configs; Hub ids against the in-memory Hub (hub_mock)."""

import json
from pathlib import Path

import pytest

from hf_gammareg.cli import embedded_configs, main, make_parser


def test_help_for_every_parser(capsys):
    for argv in (["--help"], ["inspect", "--help"], ["plot", "--help"]):
        with pytest.raises(SystemExit) as exc:
            make_parser().parse_args(argv)
        assert exc.value.code == 0
    assert "--policy" in capsys.readouterr().out


def test_embedded_configs_are_shipped():
    assert ({"bert-base-uncased", "gpt2", "meta-llama-3-8b", "resnet-50", "iwslt14-transformer"}
            <= set(embedded_configs()))


def test_inspect_gpt2_plain_table(capsys):
    assert main(["inspect", "gpt2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["parameter", "norm", "role", "decay", "reason"]
    rows = {line.split()[0]: line.split()[1:4] for line in out[2:] if line.startswith("transformer.")}
    assert len(rows) == 25
    assert rows["transformer.h.11.ln_1.weight"] == ["LayerNorm", "branch", "yes"]
    assert rows["transformer.ln_f.weight"] == ["LayerNorm", "head", "no"]
    assert out[-1].endswith("policy 'guidelines' decays 24 (18,432 values)")


def test_inspect_json_schema(capsys):
    assert main(["inspect", "resnet-50", "--json", "--policy", "only:stream"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"roles", "reasons", "norm_types", "numel", "unused", "hf_default", "invariance",
                         "model_class", "device", "policy", "decayed"}
    assert data["model_class"] == "ResNetForImageClassification" and data["device"] == "meta"
    assert len(data["roles"]) == 53 and data["policy"] == "only:stream"
    # ResNet-50: the 4 projection-shortcut BNs are the only `stream` γ (the stem feeds a projection)
    assert data["decayed"] == sorted(f"resnet.encoder.stages.{i}.layers.0.shortcut.normalization.weight"
                                     for i in range(4))
    assert data["roles"]["resnet.embedder.embedder.normalization.weight"] == "invariant"


def test_inspect_approximate_changes_post_ln_roles(capsys):
    assert main(["inspect", "iwslt14-transformer", "--json", "--invariance", "approximate"]) == 0
    roles = json.loads(capsys.readouterr().out)["roles"]
    assert roles["model.encoder.layers.0.final_layer_norm.weight"] == "invariant"
    assert roles["model.encoder.layers.5.final_layer_norm.weight"] == "branch"
    assert roles["model.decoder.layers.5.final_layer_norm.weight"] == "head"


def test_inspect_unknown_model_fails_clearly(capsys):
    assert main(["inspect", "no-such-model-anywhere"]) == 2
    err = capsys.readouterr().err
    assert "cannot load a config for 'no-such-model-anywhere'" in err and "bert-base-uncased" in err


def test_inspect_gpt2_sequence_classification_without_a_pad_token(capsys):
    # GPT-2 has no pad token, and its classifier refuses a batch of several without one: the dummy batch is cut
    # to one example. The head decides: ln_f feeds the classifier, still `head`.
    assert main(["inspect", "gpt2", "--task", "sequence-classification", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model_class"] == "GPT2ForSequenceClassification" and data["inputs_shapes"] == {"input_ids": [1, 8]}
    assert (data["roles"]["transformer.ln_f.weight"] == "head"
            and data["roles"]["transformer.h.0.ln_1.weight"] == "branch")


def _tiny_jetmoe(path):
    from transformers import JetMoeConfig

    config = JetMoeConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                          kv_channels=8, intermediate_size=20, num_local_experts=2, num_experts_per_tok=1,
                          vocab_size=64)
    config.save_pretrained(path)


def test_inspect_a_model_dummy_inputs_cannot_run_fails_in_one_line(tmp_path, capsys, monkeypatch):
    # JetMoE sizes its expert groups from routing decisions on float logits (`.tolist()` of counts): no meta pass can
    # run it, and with the CPU copy over its size limit (0 bytes here) no pass runs at all. (Decision Transformer,
    # this test's model before, now gets its trajectory inputs from the config.)
    from hf_gammareg.analysis import materialize

    monkeypatch.setattr(materialize, "MAX_CPU_COPY_BYTES", 0)
    _tiny_jetmoe(tmp_path)
    assert main(["inspect", str(tmp_path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hf-gammareg")]  # not transformers'
    assert len(err) == 1 and err[0].startswith("hf-gammareg: JetMoeModel's forward does not run")
    assert "classify_gammas(model, inputs=batch)" in err[0]


def test_inspect_a_model_sized_by_its_routing_reads_the_roles_on_a_cpu_copy(tmp_path, capsys):
    # The same JetMoE under the default size limit: the last pass runs on a CPU copy with random weights, and says so.
    # DESIGN.md § Reference classifications, Llama (JetMoE's blocks are pre-RMSNorm as Llama's): the block norms are
    # branch, the final norm head.
    _tiny_jetmoe(tmp_path)
    with pytest.warns(UserWarning, match="read on a CPU copy with random weights"):
        assert main(["inspect", str(tmp_path)]) == 0
    rows = {line.split()[0]: line.split()[2] for line in capsys.readouterr().out.splitlines() if ".weight" in line}
    assert rows == {"layers.0.input_layernorm.weight": "branch", "layers.0.post_attention_layernorm.weight": "branch",
                    "norm.weight": "head"}


def test_inspect_a_config_transformers_cannot_build_fails_in_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 30,
                                                      "num_attention_heads": 4}))
    assert main(["inspect", str(tmp_path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hf-gammareg")]
    assert len(err) == 1 and "cannot build" in err[0] and "try another --task" in err[0]


def test_inspect_bad_policy_fails_clearly(capsys):
    assert main(["inspect", "gpt2", "--policy", "guideline"]) == 2
    assert "unknown gamma policy" in capsys.readouterr().err


def test_plot_missing_history_fails_clearly(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "gamma_history.jsonl" in capsys.readouterr().err


# -- inspect: the head, option order, width, the Hub -----------------------------------------------------
@pytest.mark.parametrize(
    "task,model_class,last_norm,role,n_gammas",
    [
        # docs/design.md § Readings settled on real graphs: the head is whatever the model outputs. Without --task,
        # the config's `architectures` (BertForMaskedLM): the MLM head's transform.LayerNorm renormalizes the last norm.
        (None, "BertForMaskedLM", "bert.encoder.layer.11.output.LayerNorm.weight", "invariant", 26),
        ("masked-lm", "BertForMaskedLM", "bert.encoder.layer.11.output.LayerNorm.weight", "invariant", 26),
        ("sequence-classification", "BertForSequenceClassification", "bert.encoder.layer.11.output.LayerNorm.weight",
         "head", 25),
        ("base", "BertModel", "encoder.layer.11.output.LayerNorm.weight", "head", 25),  # it is `last_hidden_state`
    ],
)
def test_inspect_task_picks_the_head(capsys, task, model_class, last_norm, role, n_gammas):
    argv = ["inspect", "bert-base-uncased", "--json"] + (["--task", task] if task else [])
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model_class"] == model_class
    assert len(data["roles"]) == n_gammas
    assert data["roles"][last_norm] == role


def test_inspect_task_the_model_lacks_fails_clearly(capsys):
    assert main(["inspect", "gpt2", "--task", "seq2seq-lm"]) == 2
    err = capsys.readouterr().err
    assert "'gpt2' (GPT2Config) has no seq2seq-lm head" in err and "Traceback" not in err


def test_inspect_options_in_any_order(capsys):
    """`--include ln_f gpt2` must not swallow the model name; one regex per flag, flags repeatable."""
    assert main(["inspect", "--include", "ln_f", "--exclude", r"h\.0\.", "--exclude", r"h\.1\.ln_2",
                 "gpt2", "--json"]) == 0
    decayed = set(json.loads(capsys.readouterr().out)["decayed"])
    expected = {f"transformer.h.{i}.ln_{j}.weight" for i in range(12) for j in (1, 2)} | {"transformer.ln_f.weight"}
    expected -= {"transformer.h.0.ln_1.weight", "transformer.h.0.ln_2.weight", "transformer.h.1.ln_2.weight"}
    assert decayed == expected
    assert main(["inspect", "--policy", "none", "gpt2", "--include", "ln_f"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].endswith("policy 'none' decays 1 (768 values)")


def test_inspect_fits_a_narrow_terminal(capsys):
    assert main(["inspect", "bert-base-uncased", "--width", "80"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 80
    assert len(lines) < 90  # 26 γ: a row and at most two reason lines each, plus header and footer
    rows = [line.split() for line in lines if line and not line.startswith((" ", "-", "(", "parameter"))]
    names = {r[0] for r in rows if len(r) == 4}
    # Whole names (only `.weight` dropped, as the footer says), never cut mid-word
    assert "bert.encoder.layer.11.attention.output.LayerNorm" in names
    assert "cls.predictions.transform.LayerNorm" in names and len(names) == 26
    assert "names without `.weight`" in " ".join(lines[-3:])
    assert main(["inspect", "bert-base-uncased", "--width", "80", "--wide"]) == 0
    wide = capsys.readouterr().out.splitlines()
    assert wide[2].split()[:4] == ["bert.embeddings.LayerNorm.weight", "LayerNorm", "stream", "no"]
    assert max(map(len, wide)) > 200  # the reasons, whole


def test_inspect_narrow_drops_the_shared_prefix(capsys):
    assert main(["inspect", "gpt2", "--width", "72"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 72
    assert lines[2].split() == ["h.0.ln_1", "LayerNorm", "branch", "yes"]
    assert "names without the prefix `transformer.` and `.weight`" in " ".join(lines[-3:])


def test_inspect_unreachable_hub_fails_fast(capsys, mock_hub):
    """No network: one request, no retries (huggingface_hub's own backoff waits ~25 s), and the fix named."""
    mock_hub.offline = True
    assert main(["inspect", "someone/some-model"]) == 2
    err = capsys.readouterr().err
    assert len(mock_hub.requests) == 1 and mock_hub.requests[0].method == "HEAD"
    assert "the Hub cannot be reached" in err and "HF_HUB_OFFLINE=1" in err


def test_inspect_hub_repo_without_config(capsys, mock_hub):
    assert main(["inspect", "someone/some-model"]) == 2
    err = capsys.readouterr().err
    assert "cannot load a config for 'someone/some-model'" in err and "the Hub has no config.json for it" in err


def test_inspect_hub_config_is_downloaded(capsys, mock_hub, tmp_path, monkeypatch):
    """Online, a Hub id's config.json is fetched (and nothing else: no weights)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    gpt2 = json.loads((Path(__file__).parents[1] / "hf_gammareg" / "configs" / "gpt2.json").read_text())
    gpt2.pop("_comment", None)
    mock_hub.repos["someone/tiny-gpt2"] = {"config.json": json.dumps({**gpt2, "n_layer": 2}).encode()}
    assert main(["inspect", "someone/tiny-gpt2", "--json"]) == 0
    roles = json.loads(capsys.readouterr().out)["roles"]
    assert roles == {"transformer.h.0.ln_1.weight": "branch", "transformer.h.0.ln_2.weight": "branch",
                     "transformer.h.1.ln_1.weight": "branch", "transformer.h.1.ln_2.weight": "branch",
                     "transformer.ln_f.weight": "head"}
    assert {r.url.path.rsplit("/", 1)[-1] for r in mock_hub.requests if "/resolve/" in r.url.path} == {"config.json"}


def test_inspect_offline_and_not_cached_says_so(capsys):
    assert main(["inspect", "someone/some-model"]) == 2  # the suite runs with HF_HUB_OFFLINE=1
    assert "HF_HUB_OFFLINE is set and its config.json is not in the local Hub cache" in capsys.readouterr().err


def test_inspect_invalid_repo_id(capsys):
    assert main(["inspect", "./no such dir"]) == 2
    assert "not a local model directory, and not a valid Hub repo id" in capsys.readouterr().err


def test_inspect_marks_overrides_and_unmatched_patterns(capsys):
    assert main(["inspect", "gpt2", "--include", "ln_f", "--include", "ln_ff", "--exclude", r"h\.0\.", "--wide"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[3:5] for line in out.splitlines() if line.startswith("transformer.")}
    assert rows["transformer.ln_f.weight"] == ["yes", "(include)"]  # head by role, decayed by the pattern
    assert rows["transformer.h.0.ln_1.weight"] == ["no", "(exclude)"]  # branch by role, kept by the pattern
    assert rows["transformer.h.1.ln_1.weight"][0] == "yes" and "(" not in rows["transformer.h.1.ln_1.weight"][1]
    assert "! --include pattern 'ln_ff' matches no γ" in out


def test_mistyped_flags_and_policies_get_did_you_mean(capsys):
    for argv, hint in ((["inspect", "gpt2", "--polcy", "all"], "did you mean: --polcy → --policy?"),
                       (["inspekt", "gpt2"], "inspekt → inspect")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and hint in err and len(err.strip().splitlines()) == 1
    assert main(["inspect", "gpt2", "--policy", "guideline"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'guidelines'?" in err and len(err.strip().splitlines()) == 1
