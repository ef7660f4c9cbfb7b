"""How long `decay_horizon` takes: 100,000 steps of the optimizers and schedules users run (a figure, not a test).

    python benchmarks/decay_horizon_speed.py

Each case builds the real optimizer on a 3-group model-sized stand-in (a decay group, a no-decay group, a γ group)
and its scheduler, and times `decay_horizon(optimizer, 100_000, scheduler)` (best of 3). The target is < 1 s.
"""

from __future__ import annotations

import time

import torch
from transformers import get_scheduler

from hf_gammareg import decay_horizon

STEPS = 100_000


def groups(gamma_wd: float = 0.1):
    return [{"params": [torch.nn.Parameter(torch.ones(256, 256))], "weight_decay": 0.01},
            {"params": [torch.nn.Parameter(torch.ones(256))], "weight_decay": 0.0},
            {"params": [torch.nn.Parameter(torch.ones(256))], "weight_decay": gamma_wd}]


CASES = {
    "AdamW + linear warm-up (transformers)": lambda: (
        lambda o: (o, get_scheduler("linear", o, num_warmup_steps=6000, num_training_steps=STEPS)))(
        torch.optim.AdamW(groups(), lr=2e-5)),
    "AdamW fused + cosine (transformers)": lambda: (
        lambda o: (o, get_scheduler("cosine", o, num_warmup_steps=1000, num_training_steps=STEPS)))(
        torch.optim.AdamW(groups(), lr=1e-3, fused=True)),
    "SGD Nesterov + MultiStepLR (torch)": lambda: (
        lambda o: (o, torch.optim.lr_scheduler.MultiStepLR(o, milestones=[50_000, 75_000], gamma=0.1)))(
        torch.optim.SGD(groups(1e-5), lr=0.1, momentum=0.9, nesterov=True)),
    "SGD momentum, constant lr": lambda: (torch.optim.SGD(groups(1e-5), lr=0.1, momentum=0.9), None),
}


def main() -> int:
    print(f"decay_horizon over {STEPS:,} steps, 3 parameter groups (best of 3; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")
    for name, make in CASES.items():
        optimizer, scheduler = make()
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            h = decay_horizon(optimizer, STEPS, scheduler)
            best = min(best, time.perf_counter() - start)
        print(f"  {name:40s} {best:6.3f} s   γ group shrink {h[2].shrink:.4g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
