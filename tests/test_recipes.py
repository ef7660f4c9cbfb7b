"""Recipes: each runs a few steps on a tiny random model, the requested policy reaches the optimizer, the
sweep writes its tables. Expected γ sets are written out by hand from docs/design.md § Reference classifications."""

import csv
import json
import os
import sys

import numpy as np
import pytest
import torch
from conftest import load_recipe

RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
WD = 0.05

# Tiny BERT (2 layers): 5 γ. Under `exact` all are stream or head, so `guidelines` decays none of them;
# under `approximate` all but the last output.LayerNorm are invariant.
BERT_EMB = "bert.embeddings.LayerNorm.weight"
BERT_ATT0 = "bert.encoder.layer.0.attention.output.LayerNorm.weight"
BERT_OUT0 = "bert.encoder.layer.0.output.LayerNorm.weight"
BERT_ATT1 = "bert.encoder.layer.1.attention.output.LayerNorm.weight"
BERT_OUT1 = "bert.encoder.layer.1.output.LayerNorm.weight"
BERT_GAMMAS = {BERT_EMB, BERT_ATT0, BERT_OUT0, BERT_ATT1, BERT_OUT1}

# Marian 1+1 layers: encoder self_attn/final norms, decoder self_attn/encoder_attn/final norms.
MARIAN_GAMMAS = {
    "model.encoder.layers.0.self_attn_layer_norm.weight", "model.encoder.layers.0.final_layer_norm.weight",
    "model.decoder.layers.0.self_attn_layer_norm.weight", "model.decoder.layers.0.encoder_attn_layer_norm.weight",
    "model.decoder.layers.0.final_layer_norm.weight",
}


load = load_recipe


@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
    """A tiny random BERT + word-level tokenizer saved to disk, and a handful of SST-2-style rows."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("sst2")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "the", "good", "bad", "movie", "film", "great", "dull"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    torch.manual_seed(0)
    # An encoder without a classifier, like a pretrained checkpoint: the recipe adds a fresh head.
    model = BertModel(BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=len(words)))
    tokenizer.save_pretrained(root / "model")
    model.save_pretrained(root / "model")
    rows = [("a good movie", 1), ("the bad film", 0), ("a great film", 1), ("dull", 0), ('the "good" movie', 1),
            ("bad bad", 0), ("great", 1), ("a dull movie", 0)]
    for split, part in (("train", rows), ("validation", rows[:4])):
        with open(root / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in part))
    config = root / "sst2.yaml"  # the policy in the YAML is overridden from the command line below
    config.write_text(
        f"model_name_or_path: {root / 'model'}\ntrain_file: {root / 'train.tsv'}\n"
        f"validation_file: {root / 'validation.tsv'}\nmax_seq_length: 16\nper_device_train_batch_size: 4\n"
        f"max_steps: 2\nweight_decay: {WD}\nuse_cpu: true\nreport_to: none\nsave_strategy: 'no'\n"
        "disable_tqdm: true\ngamma_policy: hf-default\n")
    return root


@pytest.fixture(scope="module")
def parallel(tmp_path_factory):
    root = tmp_path_factory.mktemp("mt")
    de = ["ein mann fährt rad .", "eine frau liest ein buch .", "zwei hunde spielen im schnee .",
          "ein kind isst einen apfel .", "der mann trägt einen hut .", "die frau singt ."] * 2
    en = ["a man rides a bike .", "a woman reads a book .", "two dogs play in the snow .",
          "a child eats an apple .", "the man wears a hat .", "the woman &apos;s singing ."] * 2
    for lang, lines in (("de", de), ("en", en)):
        for split in ("train", "test"):
            (root / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def tiny_mt_argv(data, out=None, policy=None):
    """Flags for a tiny translation run; without ``out``/``policy`` (a sweep sets those)."""
    argv = ["--data_dir", str(data), "--use_cpu", "--report_to", "none",
            "--encoder_layers", "1", "--decoder_layers", "1", "--d_model", "16", "--ffn_dim", "32",
            "--attention_heads", "2", "--spm_vocab_size", "60", "--max_tokens", "64", "--max_steps", "2",
            "--generation_num_beams", "2", "--generation_max_length", "8", "--per_device_eval_batch_size", "4",
            "--weight_decay", str(WD), "--save_strategy", "no", "--disable_tqdm", "true"]
    if out is not None:
        argv += ["--output_dir", str(out), "--gamma_policy", policy]
    return argv


def optimizer_decay(results_file):
    with open(results_file, encoding="utf-8") as f:
        record = json.load(f)
    return record, {name: g["optimizer_weight_decay"] for name, g in record["gamma"]["gammas"].items()}


@pytest.mark.parametrize("name", ["sst2_bert", "sst2_bert_no_trainer", "iwslt14_transformer", "sweep"])
def test_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        load(name).main(["--help"])
    assert exc.value.code == 0
    assert "--gamma_policy" in capsys.readouterr().out or name == "sweep"


@pytest.mark.parametrize(
    "policy,invariance,decayed",
    [
        ("none", "exact", set()),
        ("all", "exact", BERT_GAMMAS),
        ("guidelines", "exact", set()),
        ("guidelines", "approximate", {BERT_EMB, BERT_ATT0, BERT_OUT0, BERT_ATT1}),
    ],
)
def test_sst2_policy_reaches_optimizer(sst2, tmp_path, policy, invariance, decayed):
    out = tmp_path / "run"
    argv = [str(sst2 / "sst2.yaml"), "--output_dir", str(out),
            "--gamma_policy", policy, "--gamma_invariance", invariance]
    assert load("sst2_bert").main(argv) == 0
    record, decay = optimizer_decay(out / "results.json")
    assert decay == {name: (WD if name in decayed else 0.0) for name in BERT_GAMMAS}
    assert record["gamma"]["policy"] == policy  # the CLI flag won over the YAML's hf-default
    assert 0.0 <= record["metrics"]["eval_accuracy"] <= 100.0 and record["n_eval"] == 4
    # 4 sentences: accuracy in quarters, computed by the `evaluate` module shipped with the recipes (offline)
    assert record["metrics"]["eval_accuracy"] in (0.0, 25.0, 50.0, 75.0, 100.0)
    assert record["metric_module"] == os.path.join("recipes", "metrics", "accuracy.py")


def test_same_seed_and_decay_set_give_the_same_run(sst2, tmp_path):
    """`none` and `guidelines` (exact) decay the same γ in BERT: with one seed the runs must be identical,
    which needs the seed set before the classifier head is initialized."""
    losses = []
    for policy in ("none", "guidelines"):
        out = tmp_path / policy
        assert load("sst2_bert").main([str(sst2 / "sst2.yaml"), "--output_dir", str(out), "--gamma_policy", policy,
                                       "--seed", "3"]) == 0
        losses.append(optimizer_decay(out / "results.json")[0]["train_loss"])
    assert losses[0] == losses[1]


@pytest.mark.parametrize("policy,decayed", [("none", set()), ("all", MARIAN_GAMMAS)])
def test_translation_policy_reaches_optimizer(parallel, tmp_path, policy, decayed):
    out = tmp_path / "run"
    assert load("iwslt14_transformer").main(tiny_mt_argv(parallel, out, policy)) == 0
    record, decay = optimizer_decay(out / "results.json")
    assert decay == {name: (WD if name in decayed else 0.0) for name in MARIAN_GAMMAS}
    assert (out / "spm.model").exists()  # the SentencePiece model is saved with the run
    assert set(record["metrics"]) == {"sacrebleu", "tok_bleu"} and record["n_eval"] == 12


def test_sweep_writes_tables(parallel, tmp_path):
    results = tmp_path / "results"
    argv = ["--recipe", os.path.join(RECIPES, "iwslt14_transformer.py"), "--name", "tiny", "--launcher", "in-process",
            "--policies", "none", "all", "--seeds", "0", "--results_dir", str(results),
            "--runs_dir", str(tmp_path / "runs"), "--", *tiny_mt_argv(parallel)]
    assert load("sweep").main(argv) == 0
    with open(results / "tiny.csv", encoding="utf-8") as f:
        header = [line for line in f if line.startswith("#")]
        f.seek(0)
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    assert [(r["entry"], r["n_decayed"]) for r in rows] == [("none", "0"), ("all", "5")]
    assert any(line.startswith("# command: python recipes/sweep.py") for line in header)
    assert "# metrics: sacrebleu tok_bleu\n" in header  # the run record declares which columns are results
    assert any(line.startswith("# diagnostics: ") and "tokens_per_s" in line for line in header)
    table = (results / "tiny.md").read_text(encoding="utf-8")
    assert "| `none` | none | 0 / 5 |" in table and "| `all` | all | 5 / 5 |" in table and "hardware:" in table


def test_sweep_table_names_the_gamma_coefficient_of_every_entry(tmp_path):
    """Once one entry sets gamma_weight_decay, the others' rows say their γ get the run's weight decay."""
    sweep = load("sweep")
    csv_path, md_path = str(tmp_path / "t.csv"), str(tmp_path / "t.md")
    for text, seed, decayed, bleu in [("none", 1, 0, 30.0), ("guidelines+approximate", 1, 14, 30.5),
                                      ("g05=guidelines@gwd=0.5", 1, 7, 29.5)]:
        record = {"recipe": "t", "seed": seed, "metrics": {"tok_bleu": bleu}, "train_loss": 1.0, "wall_s": 1.0,
                  "gamma": {"n_gammas": 15, "n_decayed": decayed}, "primary_metric": "tok_bleu"}
        sweep.append_row(csv_path, sweep.record_row(sweep.parse_entry(text), seed, record), ["command: test"])
    sweep.render(csv_path, md_path, title="t", baseline="none",
                 order=["none", "guidelines+approximate", "g05"], seeds=[1])
    table = open(md_path, encoding="utf-8").read()
    assert "| `none` | none | 0 / 15 |" in table
    assert "| `guidelines+approximate` | guidelines + approximate, γ wd = weight decay | 14 / 15 |" in table
    assert "| `g05` | guidelines, γ wd 0.5 | 7 / 15 |" in table


def test_sweep_renders_while_the_baseline_has_not_landed(tmp_path):
    """Side by side, another entry can finish before the baseline: the tables render, without Δ, until it lands."""
    sweep = load("sweep")
    results = tmp_path / "results"
    results.mkdir()
    csv_path = str(results / "t.csv")
    record = {"recipe": "t", "seed": 0, "metrics": {"accuracy": 79.25}, "gamma": {"n_gammas": 21, "n_decayed": 18},
              "primary_metric": "accuracy", "train_loss": 1.0, "wall_s": 1.0}
    sweep.append_row(csv_path, sweep.record_row(sweep.parse_entry("guidelines"), 0, record), ["command: test"])
    argv = ["--recipe", "unused.py", "--name", "t", "--results_dir", str(results), "--baseline", "none",
            "--policies", "none", "guidelines", "--seeds", "0", "--render_only"]
    assert sweep.main(argv) == 0
    table = (results / "t.md").read_text(encoding="utf-8")
    assert "| `guidelines` | guidelines | 18 / 21 | 79.25 ± 0.00 |" in table and "vs `none`" not in table
    record["metrics"]["accuracy"] = 79.02
    record["gamma"]["n_decayed"] = 0
    sweep.append_row(csv_path, sweep.record_row(sweep.parse_entry("none"), 0, record), [])
    assert sweep.main(argv) == 0
    assert "+0.23 (n=1, no CI)" in (results / "t.md").read_text(encoding="utf-8")  # 79.25 − 79.02


def test_sweep_renders_a_csv_from_before_rows_named_their_primary_metric(tmp_path):
    """`results/sst2_cpu.csv` predates the `primary_metric` column: resuming it must render on its only metric."""
    sweep = load("sweep")
    csv_path, md_path = tmp_path / "old.csv", str(tmp_path / "old.md")
    csv_path.write_text("# command: python recipes/sweep.py --name old\n"
                        "entry,policy,invariance,seed,eval_accuracy,n_gammas,n_decayed,train_loss,wall_s\n"
                        "none,none,exact,0,80.0,13,0,0.44,1.0\nnone,none,exact,1,82.0,13,0,0.45,1.0\n"
                        "all,all,exact,0,81.0,13,13,0.44,1.0\nall,all,exact,1,82.0,13,13,0.45,1.0\n",
                        encoding="utf-8")
    sweep.render(str(csv_path), md_path, title="old", baseline="none", order=["none", "all"], seeds=[0, 1])
    table = open(md_path, encoding="utf-8").read()
    assert "| `all` | all | 13 / 13 | 81.50 ± 0.71 |" in table and "Δ eval_accuracy vs `none`" in table


def test_sweep_header_records_relative_paths_and_the_source_commit(tmp_path, monkeypatch):
    sweep = load("sweep")
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "models" / "minilm"
    assert sweep.recorded_arg(str(model)) == os.path.join("models", "minilm")
    assert sweep.recorded_arg(f"--model_name_or_path={model}") == "--model_name_or_path=" + os.path.join("models",
                                                                                                        "minilm")
    assert sweep.recorded_arg("--include=a=b") == "--include=a=b" and sweep.recorded_arg("x/y") == "x/y"
    # A package imported from a checkout (PYTHONPATH, not installed) is named with its version and commit.
    version = sweep.source_version("hf_gammareg")
    assert version.startswith("0.") and " from source" in version
    assert sweep.source_version("no_such_package_here") is None


def test_token_batches_cover_every_sentence_once():
    mt = load("iwslt14_transformer")
    lengths = [3, 9, 4, 4, 12, 7, 1, 5, 5, 8, 2, 6]
    sampler = mt.TokenBatchSampler(lengths, max_tokens=16, seed=0)
    first, second = list(sampler), list(sampler)
    for batches in (first, second):
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert all(len(b) * max(lengths[i] for i in b) <= 16 for b in batches)
        assert len(batches) == len(sampler)
    assert first != second  # a new order each epoch
    sampler.set_epoch(0)
    assert list(sampler) == first  # and the same order for the same epoch on every process


def test_bleu_on_tokenized_references():
    mt = load("iwslt14_transformer")
    assert mt.simple_detokenize("the woman &apos;s hat , blue ( dark ) .") == "the woman's hat, blue (dark)."
    refs = ["a man rides a bike .", "two dogs play in the snow ."]
    perfect = mt.bleu_scores(refs, refs, data_is_tokenized=True, lang="en")
    assert perfect["tok_bleu"] == pytest.approx(100.0) and perfect["sacrebleu"] == pytest.approx(100.0)
    worse = mt.bleu_scores(["a man rides a horse .", "two cats play ."], refs, data_is_tokenized=True, lang="en")
    assert 0 < worse["tok_bleu"] < 100


def test_sst2_accuracy_through_evaluate_equals_the_old_computation(monkeypatch):
    from transformers import EvalPrediction

    utils = load("recipe_utils")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as in the suite: the module shipped with the recipes
    metric, source = utils.load_metric("glue", "sst2", offline_module="accuracy")
    assert source == os.path.join("recipes", "metrics", "accuracy.py")
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5], [1.5, 1.0], [-2.0, 2.0]], dtype=np.float32)
    labels = np.array([1, 0, 0, 1, 1])  # argmax 1, 0, 1, 0, 1: 3 of 5 right
    new = utils.accuracy_metrics(metric)(EvalPrediction(predictions=logits, label_ids=labels))
    assert new == {"accuracy": 60.0} == utils.compute_accuracy((logits, labels))
    # the way run_glue.py hands predictions over: a tuple whose first element is the logits
    assert utils.accuracy_metrics(metric)(EvalPrediction(predictions=(logits,), label_ids=labels)) == new


def test_bleu_through_evaluate_equals_the_old_computation(monkeypatch):
    import sacrebleu

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mt = load("iwslt14_transformer")
    refs = ["a man rides a bike down the street .", "two dogs play in the white snow .", "the woman &apos;s hat ."]
    hyps = ["a man rides a bicycle down the street .", "two dogs are playing in the snow .", "the woman &apos;s hat ."]
    scores = mt.bleu_scores(hyps, refs, data_is_tokenized=True, lang="en")
    assert scores["metric_module"] == os.path.join("recipes", "metrics", "sacrebleu.py")
    # what the recipe computed before it went through `evaluate`: sacreBLEU's own calls
    from sacremoses import MosesDetokenizer

    detok = MosesDetokenizer("en").detokenize
    sacre = sacrebleu.metrics.BLEU().corpus_score([detok(h.split()) for h in hyps], [[detok(r.split()) for r in refs]])
    tok = sacrebleu.corpus_bleu(hyps, [refs], tokenize="none")
    assert (scores["sacrebleu"], scores["tok_bleu"]) == (round(sacre.score, 2), round(tok.score, 2))
    assert 0 < scores["tok_bleu"] < 100
    assert scores["sacrebleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    # the module's other outputs are sacreBLEU's too
    metric, _ = load("recipe_utils").load_metric("sacrebleu", offline_module="sacrebleu")
    out = metric.compute(predictions=hyps, references=[[r] for r in refs], tokenize="none")
    assert (out["counts"], out["totals"], out["bp"]) == (tok.counts, tok.totals, tok.bp)


def test_decode_stops_at_eos_and_drops_gather_padding():
    mt = load("iwslt14_transformer")

    class Pieces:  # stands in for a SentencePieceProcessor
        def decode(self, ids):
            return " ".join(map(str, ids))

    rows = np.array([[mt.PAD, 7, 8, mt.EOS, 9], [mt.PAD, 5, -100, -100, -100]])
    assert mt.decode(Pieces(), rows) == ["7 8", "5"]


# -- what a run saves and pushes ---------------------------------------------------------------------------
BERT_APPROXIMATE_ROLES = {BERT_EMB: "invariant", BERT_ATT0: "invariant", BERT_OUT0: "invariant",
                          BERT_ATT1: "invariant", BERT_OUT1: "head"}  # docs/design.md: BERT under `approximate`
CARD_LINE = "policy `guidelines`, invariance `approximate`, decoupled weight decay 0.05 on 4 of 5 normalization scales"


def test_sst2_push_to_hub_uploads_config_report_and_card(sst2, tmp_path, mock_hub):
    out = tmp_path / "run"
    argv = [str(sst2 / "sst2.yaml"), "--output_dir", str(out), "--gamma_policy", "guidelines",
            "--gamma_invariance", "approximate", "--push_to_hub", "true", "--hub_model_id", "someone/tiny-sst2",
            "--hub_token", "hf_fake"]
    assert load("sst2_bert").main(argv) == 0
    assert len(mock_hub.commits) == 1 and mock_hub.commits[0]["repo_id"] == "someone/tiny-sst2"
    files = mock_hub.last_files()
    assert {"model.safetensors", "config.json", "tokenizer.json", "gammareg_config.json", "gamma_report.json",
            "README.md", "results.json", "gamma_history.jsonl"} <= set(files)
    assert json.loads(files["gammareg_config.json"]) == {
        "policy": "guidelines", "gamma_weight_decay": None, "invariance": "approximate", "include": [],
        "exclude": [], "regularization": "decoupled"}
    report = json.loads(files["gamma_report.json"])
    assert report["roles"] == BERT_APPROXIMATE_ROLES and report["invariance"] == "approximate"
    card = files["README.md"].decode()
    assert "## γ regularization" in card and CARD_LINE in card
    assert "| invariant | 4 | 128 | 4 |" in card and "| head | 1 | 32 | 0 |" in card  # hidden size 32
    assert json.loads(files["results.json"])["gamma"]["n_decayed"] == 4
    # What was uploaded is what the run saved locally.
    assert (out / "gammareg_config.json").read_bytes() == files["gammareg_config.json"]


def test_save_model_writes_the_card(parallel, tmp_path):
    out = tmp_path / "run"
    argv = tiny_mt_argv(parallel, out, "all") + ["--save_model", "true"]
    assert load("iwslt14_transformer").main(argv) == 0
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "## γ regularization" in card
    assert "policy `all`, invariance `exact`, decoupled weight decay 0.05 on 5 of 5 normalization scales" in card
    assert json.loads((out / "gammareg_config.json").read_text())["policy"] == "all"
    assert set(json.loads((out / "gamma_report.json").read_text())["roles"]) == MARIAN_GAMMAS


def test_yaml_typo_names_the_key_and_the_closest(sst2, tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    config.write_text((sst2 / "sst2.yaml").read_text() + "lerning_rate: 0.1\ngamma_polcy: all\nfoo_bar_baz: 1\n")
    with pytest.raises(SystemExit) as exc:
        load("sst2_bert").main([str(config), "--output_dir", str(tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert ("unknown keys 'lerning_rate' (did you mean 'learning_rate'?), 'gamma_polcy' (did you mean "
            "'gamma_policy'?), 'foo_bar_baz' (--help lists the known ones)") in err
    assert str(config) in err and "Traceback" not in err


# -- data through `datasets` -------------------------------------------------------------------------------
def test_local_files_read_as_the_csv_module_reads_them(tmp_path):
    """TSV with bare quotes, and fields pandas would turn into NaN or numbers, come back as written."""
    utils = load("recipe_utils")
    (tmp_path / "d.tsv").write_text('sentence\tlabel\nthe "good" movie\t1\nNA\t0\nnull\t1\n2\t0\n it \'s ok \t1\n',
                                    encoding="utf-8")
    data = utils.load_data_file(str(tmp_path / "d.tsv"), columns={"sentence": "string", "label": "int64"})
    assert data.to_list() == [{"sentence": 'the "good" movie', "label": 1}, {"sentence": "NA", "label": 0},
                              {"sentence": "null", "label": 1}, {"sentence": "2", "label": 0},
                              {"sentence": " it 's ok ", "label": 1}]
    (tmp_path / "d.jsonl").write_text('{"label": 1, "sentence": "a", "idx": 0}\n'
                                      '{"label": 0, "sentence": "b", "idx": 1}\n')
    data = utils.load_data_file(str(tmp_path / "d.jsonl"), columns={"sentence": "string", "label": "int64"})
    assert data.to_list() == [{"sentence": "a", "label": 1}, {"sentence": "b", "label": 0}]
    # Text: one row per line, split on newlines only (\r\n too), like iterating over a file.
    (tmp_path / "d.de").write_bytes("ein mann .\r\nzwei\u2028hunde\n\nende".encode())
    assert utils.load_data_file(str(tmp_path / "d.de"))["text"] == ["ein mann .", "zwei\u2028hunde", "", "ende"]
    with pytest.raises(ValueError, match="no column"):
        utils.load_data_file(str(tmp_path / "d.jsonl"), columns={"text": "string"})


def test_sst2_rows_keep_file_order_and_limit(sst2):
    sst2_bert = load("sst2_bert")
    args = sst2_bert.SST2Arguments(train_file=str(sst2 / "train.tsv"), validation_file=str(sst2 / "validation.tsv"),
                                   max_train_samples=5)
    assert sst2_bert.load_split(args, "train").to_list() == [
        {"sentence": "a good movie", "label": 1}, {"sentence": "the bad film", "label": 0},
        {"sentence": "a great film", "label": 1}, {"sentence": "dull", "label": 0},
        {"sentence": 'the "good" movie', "label": 1}]
    assert len(sst2_bert.load_split(args, "validation")) == 4


def test_translation_pairs_from_a_data_dir(parallel, tmp_path):
    mt = load("iwslt14_transformer")
    pairs = mt.load_pairs(mt.TranslationArguments(data_dir=str(parallel), max_eval_samples=3), "eval")
    assert pairs.to_list() == [{"src": "ein mann fährt rad .", "tgt": "a man rides a bike ."},
                               {"src": "eine frau liest ein buch .", "tgt": "a woman reads a book ."},
                               {"src": "zwei hunde spielen im schnee .", "tgt": "two dogs play in the snow ."}]
    (tmp_path / "valid.de").write_text("eins\nzwei\n", encoding="utf-8")
    (tmp_path / "valid.en").write_text("one\n", encoding="utf-8")
    with pytest.raises(ValueError, match="2 source lines but 1 target lines"):
        mt.load_pairs(mt.TranslationArguments(data_dir=str(tmp_path), eval_split="valid"), "eval")


# -- the SST-2 recipe without a Trainer (accelerate loop + hf_gammareg.decay_plan / param_groups) -------------------
@pytest.mark.parametrize("flags,decay", [
    (["--gamma_policy", "guidelines"], dict.fromkeys(BERT_GAMMAS, 0.0)),  # post-LN BERT, exact: none decayed
    (["--gamma_policy", "guidelines", "--gamma_invariance", "approximate"],
     {BERT_EMB: WD, BERT_ATT0: WD, BERT_OUT0: WD, BERT_ATT1: WD, BERT_OUT1: 0.0}),
    (["--gamma_policy", "all", "--gamma_weight_decay", "0.3"], dict.fromkeys(BERT_GAMMAS, 0.3)),
    # coupled L2: the γ leave the optimizer's decay (0.0) and get the penalty in the loss
    (["--gamma_policy", "all", "--gamma_regularization", "l2"], dict.fromkeys(BERT_GAMMAS, 0.0)),
])
def test_sst2_no_trainer_policy_reaches_optimizer(sst2, tmp_path, flags, decay):
    out = tmp_path / "run"
    assert load("sst2_bert_no_trainer").main([str(sst2 / "sst2.yaml"), "--output_dir", str(out), *flags]) == 0
    record, optimizer_decay_ = optimizer_decay(out / "results.json")
    assert optimizer_decay_ == decay
    assert record["gamma"]["n_decayed"] == sum(1 for f in flags if f == "all") * 5 + ("approximate" in flags) * 4
    assert record["steps"] == 2 and record["num_processes"] == 1 and record["n_eval"] == 4
    assert 0.0 <= record["metrics"]["eval_accuracy"] <= 100.0


def test_sst2_no_trainer_writes_the_trainer_recipes_results(sst2, tmp_path):
    """Same fields as recipes/sst2_bert.py's results.json, so recipes/sweep.py reads either."""
    records = []
    for name in ("sst2_bert", "sst2_bert_no_trainer"):
        out = tmp_path / name
        assert load(name).main([str(sst2 / "sst2.yaml"), "--output_dir", str(out), "--gamma_policy", "all"]) == 0
        records.append(optimizer_decay(out / "results.json"))
    (trainer_record, trainer_decay), (loop_record, loop_decay) = records
    assert set(trainer_record) <= set(loop_record)
    assert set(trainer_record["gamma"]) == set(loop_record["gamma"])
    assert trainer_decay == loop_decay == dict.fromkeys(BERT_GAMMAS, WD)
    assert trainer_record["gamma"]["summary"] == loop_record["gamma"]["summary"]
    # the Trainer reads the roles from its first training batch; the loop passes its own first batch as inputs=
    assert (trainer_record["gamma"]["inputs_source"], loop_record["gamma"]["inputs_source"]) == (
        "training batch", "user inputs")


def test_sweep_drives_the_no_trainer_recipe(sst2, tmp_path):
    results = tmp_path / "results"
    argv = ["--recipe", os.path.join(RECIPES, "sst2_bert_no_trainer.py"), "--config", str(sst2 / "sst2.yaml"),
            "--name", "loop", "--launcher", "in-process", "--policies", "none", "all+approximate", "--seeds", "0",
            "--results_dir", str(results), "--runs_dir", str(tmp_path / "runs")]
    assert load("sweep").main(argv) == 0
    with open(results / "loop.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    assert [(r["entry"], r["invariance"], r["n_decayed"]) for r in rows] == [
        ("none", "exact", "0"), ("all+approximate", "approximate", "5")]


@pytest.mark.multiprocess
def test_sst2_no_trainer_two_processes(sst2, tmp_path):
    """`accelerate launch --multi_gpu` with use_cpu: DDP over gloo (accelerate 1.15's `--cpu --num_processes 2`
    would start one process). Two processes, accumulation 2, both build the same groups."""
    from test_scale_out import _free_port, run_launcher

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), os.path.join(RECIPES, "sst2_bert_no_trainer.py"),
           str(sst2 / "sst2.yaml"), "--output_dir", str(out), "--gamma_policy", "guidelines",
           "--gamma_invariance", "approximate", "--per_device_train_batch_size", "2",
           "--gradient_accumulation_steps", "2"]
    proc = run_launcher(cmd)
    record, decay = optimizer_decay(out / "results.json")
    assert record["num_processes"] == 2 and record["steps"] == 2
    first, second = record["groups_by_process"]
    assert first == second
    assert [(wd, is_gamma) for wd, is_gamma, _ in first] == [(WD, False), (0.0, False)]
    assert {BERT_EMB, BERT_ATT0, BERT_OUT0, BERT_ATT1} <= set(first[0][2]) and BERT_OUT1 in first[1][2]
    assert decay == {BERT_EMB: WD, BERT_ATT0: WD, BERT_OUT0: WD, BERT_ATT1: WD, BERT_OUT1: 0.0}
    assert "step 2/2" in proc.stdout


@pytest.mark.multiprocess
def test_translation_two_processes_score_each_sentence_once(parallel, tmp_path):
    """Under DDP the final beam search must translate the 11 eval sentences once each — not the repeats a
    distributed predict pads its last batches with (11 sentences, batch 5, 2 processes gave 20 before)."""
    from test_scale_out import _free_port, run_launcher

    out = tmp_path / "run"
    argv = [a for a in tiny_mt_argv(parallel, out, "guidelines")]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), os.path.join(RECIPES, "iwslt14_transformer.py"), *argv,
           "--max_eval_samples", "11", "--per_device_eval_batch_size", "5"]
    run_launcher(cmd)
    record = json.loads((out / "results.json").read_text())
    assert record["n_eval"] == 11


def test_recipe_argument_errors_exit_2_with_did_you_mean(capsys):
    recipe = load("cifar_resnet")
    config = os.path.join(RECIPES, "configs", "cifar_resnet_cpu.yaml")
    for argv, hint in (([config, "--gamma_polcy", "all"], "did you mean '--gamma_policy'?"),
                       ([config, "--gamma_policy", "guideline"], "did you mean 'guidelines'?")):
        with pytest.raises(SystemExit) as exit_:
            recipe.parse_args(recipe.make_parser(), argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and hint in err and "Traceback" not in err


def test_run_record_is_declared_and_checked(tmp_path):
    utils = load("recipe_utils")
    with pytest.raises(ValueError, match="lacks \\['wall_s'\\]"):
        utils.check_run_record({"recipe": "r", "seed": 0, "metrics": {"a": 1.0}, "primary_metric": "a",
                                "gamma": {}, "train_loss": 0.1})
    with pytest.raises(ValueError, match="primary_metric 'b'"):
        utils.check_run_record({"recipe": "r", "seed": 0, "metrics": {"a": 1.0}, "primary_metric": "b",
                                "gamma": {}, "train_loss": 0.1, "wall_s": 1.0})
    from sweep_records import RunRecord, column_roles, declared_columns

    record = RunRecord(recipe="r", seed=0, metrics={"accuracy": 70.0}, primary_metric="accuracy", gamma={},
                       train_loss=0.1, wall_s=1.0, table_columns={"images_per_s": 100.0})
    assert column_roles(record) == ["metrics: accuracy", "diagnostics: images_per_s"]
    assert declared_columns(["command: x", "metrics: accuracy", "diagnostics: images_per_s"]) == (
        ["accuracy"], ["images_per_s"])
