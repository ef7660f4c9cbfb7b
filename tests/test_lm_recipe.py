"""The language-model pretraining recipe: --help, a few steps on a tiny random GPT-2 and a tiny text file, the γ
weight decay in its optimizer per policy (written out by hand from docs/design.md), the data helpers, and bad input."""

import functools
import importlib.util
import json
import os
import sys

import pytest
import torch

RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
WD = 0.1
# GPT-2 is pre-LN (docs/design.md § Reference classifications): every ln_1, ln_2 → branch, ln_f → head.
LN = {f"transformer.h.{i}.{n}.weight" for i in (0, 1) for n in ("ln_1", "ln_2")}
LN_F = "transformer.ln_f.weight"
DECAY = {  # policy -> the weight decay each γ gets in the optimizer, by hand
    "hf-default": {**dict.fromkeys(LN, 0.0), LN_F: 0.0},  # Trainer never decays a LayerNorm
    "guidelines": {**dict.fromkeys(LN, WD), LN_F: 0.0},  # branch decayed, head spared
    "only:head": {**dict.fromkeys(LN, 0.0), LN_F: WD},
    "all": {**dict.fromkeys(LN, WD), LN_F: WD},
}
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40


@functools.cache
def load():
    spec = importlib.util.spec_from_file_location("recipe_lm_pretrain", os.path.join(RECIPES, "lm_pretrain.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def tiny_argv(text_file, out, policy):
    return ["--text_file", str(text_file), "--block_size", "16", "--n_layer", "2", "--n_head", "2", "--n_embd", "16",
            "--dropout", "0.0", "--max_steps", "3", "--per_device_train_batch_size", "4",
            "--per_device_eval_batch_size", "8", "--learning_rate", "1e-3", "--weight_decay", str(WD),
            "--use_cpu", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true",
            "--output_dir", str(out), "--gamma_policy", policy]


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        load().main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--gamma_policy" in out and "--block_size" in out and "--text_file" in out


@pytest.mark.parametrize("policy", sorted(DECAY))
def test_policy_reaches_the_optimizer(text_file, tmp_path, policy):
    out = tmp_path / "run"
    assert load().main(tiny_argv(text_file, out, policy)) == 0
    record = json.loads((out / "results.json").read_text())
    decay = {name: g["optimizer_weight_decay"] for name, g in record["gamma"]["gammas"].items()}
    assert decay == DECAY[policy]
    assert record["metrics"]["val_loss"] > 0 and record["metrics"]["perplexity"] > 1
    assert record["tokens_per_s"] > 0 and set(record["table_columns"]) >= {"tokens_per_s", "gamma_rms_branch"}
    assert record["vocab_size"] == len(set(TEXT))


def test_char_tokenizer_round_trip_and_split(tmp_path):
    lm = load()
    tok = lm.CharTokenizer.from_text("hello world")
    assert tok.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]  # sorted, as nanoGPT's prepare.py
    assert tok.decode(tok.encode("world hello")) == "world hello"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("hi!")
    path = tok.save(str(tmp_path))
    assert json.loads(open(path, encoding="utf-8").read())["chars"] == tok.chars
    train, val = lm.split_text("abcdefghij" * 10, 0.9, block_size=4)
    assert (len(train), len(val)) == (90, 10) and train + val == "abcdefghij" * 10  # first 90 %, last 10 %


def test_windows_are_pinned_by_the_seed():
    lm = load()
    ids = torch.arange(100)
    a, b, c = (lm.RandomWindows(ids, 8, 5, seed) for seed in (0, 0, 1))
    assert [a[i]["input_ids"].tolist() for i in range(5)] == [b[i]["input_ids"].tolist() for i in range(5)]
    assert [a[i]["input_ids"].tolist() for i in range(5)] != [c[i]["input_ids"].tolist() for i in range(5)]
    assert all(len(a[i]["input_ids"]) == 8 and torch.equal(a[i]["input_ids"], a[i]["labels"]) for i in range(5))
    windows = lm.ConsecutiveWindows(ids, 8)
    assert len(windows) == 12 and windows[1]["input_ids"].tolist() == list(range(8, 16))


def test_unigram_reference():
    lm = load()
    assert lm.unigram_loss("ab" * 50, "ab" * 5) == pytest.approx(-__import__("math").log(51 / 102))


def test_bad_input_fails_before_training(tmp_path, text_file, capsys):
    lm = load()
    with pytest.raises(FileNotFoundError, match="--text_file"):
        lm.main(tiny_argv(tmp_path / "missing.txt", tmp_path / "a", "guidelines"))
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        lm.main(tiny_argv(empty, tmp_path / "b", "guidelines"))
    with pytest.raises(ValueError, match="fewer than one context window"):
        lm.main(tiny_argv(text_file, tmp_path / "c", "guidelines") + ["--block_size", "1000"])
    # An argument the recipe refuses ends it with exit status 2 and one line naming the argument.
    with pytest.raises(SystemExit) as exit_:
        lm.main(tiny_argv(text_file, tmp_path / "d", "decay-everything"))
    assert exit_.value.code == 2 and "gamma_policy" in capsys.readouterr().err
    assert not any((tmp_path / d / "results.json").exists() for d in "abcd")
