"""Per-step overhead of `GammaRegTrainer` over plain `transformers.Trainer`, and the one-time classification cost.

    python benchmarks/trainer_overhead.py                 # tiny GPT-2, 7 rounds of 60 steps each
    python benchmarks/trainer_overhead.py --rounds 11 --steps 100

Both trainers train the same tiny GPT-2 (hidden 32, 2 layers) on the same data from the same seed;
`GammaRegTrainer` runs the default policy (`guidelines`, decoupled weight decay) with γ-norm logging
on. Runs are interleaved (plain, ours, plain, ours, …, the order flipped every round) so that load
from other work on a shared machine hits both alike; each round gives one ratio, and the median
ratio is printed. Step time is measured from `on_train_begin` (after the optimizer, and with it the
γ classification, is built) to `on_train_end`, divided by the steps. The one-time cost is printed
twice: `classify_gammas` alone (best of --rounds) and the extra time `GammaRegTrainer.create_optimizer`
takes over `Trainer.create_optimizer` (median). Target: ratio ≤ 1.01.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch.utils.data import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

from hf_gammareg import GammaRegTrainer, GammaRegTrainingArguments, classify_gammas

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_gpt2():
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, bos_token_id=0, eos_token_id=0))


class Tokens(Dataset):
    def __init__(self, n=256):
        self.ids = torch.randint(0, 64, (n, 16), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class Clock(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = time.perf_counter() - self.start


def step_time(trainer_cls, args_cls, steps: int, out: str) -> float:
    torch.manual_seed(0)
    clock = Clock()
    args = args_cls(output_dir=out, report_to="none", use_cpu=True, max_steps=steps, per_device_train_batch_size=8,
                    learning_rate=1e-3, weight_decay=0.01, logging_steps=20, save_strategy="no", disable_tqdm=True,
                    seed=0, dataloader_num_workers=0)
    trainer = trainer_cls(model=tiny_gpt2(), args=args, train_dataset=Tokens(), callbacks=[clock])
    trainer.train()
    return clock.seconds / steps


def optimizer_time(trainer_cls, args_cls, out: str) -> float:
    args = args_cls(output_dir=out, report_to="none", use_cpu=True, weight_decay=0.01)
    trainer = trainer_cls(model=tiny_gpt2(), args=args)
    start = time.perf_counter()
    trainer.create_optimizer()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--out", default="/tmp/hf_gammareg_bench")
    args = p.parse_args(argv)
    import transformers.utils.logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)  # one thread: less sensitive to the other work on a shared machine
    pairs = [(Trainer, TrainingArguments), (GammaRegTrainer, GammaRegTrainingArguments)]
    step_time(*pairs[0], 10, args.out)  # warm-up: imports, first allocations
    step_time(*pairs[1], 10, args.out)
    ratios, plain_t, ours_t = [], [], []
    for r in range(args.rounds):
        order = pairs if r % 2 == 0 else pairs[::-1]
        times = {cls: step_time(cls, acls, args.steps, args.out) for cls, acls in order}
        plain_t.append(times[Trainer])
        ours_t.append(times[GammaRegTrainer])
        ratios.append(times[GammaRegTrainer] / times[Trainer])
        print(f"round {r}: Trainer {times[Trainer] * 1e3:.2f} ms/step, GammaRegTrainer "
              f"{times[GammaRegTrainer] * 1e3:.2f} ms/step, ratio {ratios[-1]:.4f}", flush=True)
    classify = []
    extra = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        classify_gammas(tiny_gpt2())
        classify.append(time.perf_counter() - start)
        extra.append(optimizer_time(*pairs[1], args.out) - optimizer_time(*pairs[0], args.out))
    print(f"torch {torch.__version__}, {args.rounds} rounds x {args.steps} steps, batch 8 x 16 tokens, 1 thread")
    print(f"median step time: Trainer {statistics.median(plain_t) * 1e3:.2f} ms, "
          f"GammaRegTrainer {statistics.median(ours_t) * 1e3:.2f} ms")
    print(f"step-time ratio GammaRegTrainer/Trainer: median {statistics.median(ratios):.4f} "
          f"(min {min(ratios):.4f}, max {max(ratios):.4f}); target <= 1.01")
    print(f"one-time: classify_gammas {min(classify) * 1e3:.1f} ms (best), create_optimizer extra "
          f"{statistics.median(extra) * 1e3:.1f} ms (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
