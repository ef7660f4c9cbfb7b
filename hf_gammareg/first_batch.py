"""The first training batch, read ahead as training would build it, with every RNG left as it was.

`GammaRegMixin` reads the γ roles from the batch training itself starts with: rows ``0 … per_device_train_batch_size
- 1`` of ``train_dataset``, through the collator ``Trainer._get_dataloader`` uses (``remove_unused_columns``
applied the same way), without creating the dataloader or touching its sampler. Every RNG a collator may draw
from is restored afterwards (`SavedRNG`).
"""

from __future__ import annotations

import random

import torch

from . import compat


def has_length(dataset) -> bool:
    try:
        return len(dataset) is not None
    except TypeError:
        return False


def first_training_batch(trainer):
    """``(batch, None)``: the first training batch of ``trainer``, built as training builds it; or ``(None, why not)``.

    Rows ``0 … per_device_train_batch_size - 1`` are read by index and passed through the collator that
    `Trainer._get_dataloader` uses (``remove_unused_columns`` applied the same way). The train dataloader
    is not created and its sampler and generator are not touched, so every rank reads the same rows and
    reaches the same roles, and the data order training sees does not change; the CPU, CUDA, NumPy and
    Python RNG states are restored after the collator (a masking collator draws from them).
    """
    from transformers import Trainer

    dataset = trainer.train_dataset
    if dataset is None:
        return None, "no train_dataset"
    if isinstance(dataset, torch.utils.data.IterableDataset) or not has_length(dataset):
        # Reading ahead in a stream would consume examples (a generator) or move its state (a resumable
        # `datasets.IterableDataset`), and training must see the stream exactly as it would without us.
        return None, ("train_dataset is an IterableDataset, which is not read ahead (that would consume "
                      "or move its stream)")
    if len(dataset) == 0:
        return None, "train_dataset is empty"
    custom = [m for m in ("get_train_dataloader", "_get_dataloader")
              if getattr(type(trainer), m) is not getattr(Trainer, m)]
    if custom:
        # The subclass builds its batches its own way; reading one ahead could draw from its sampler or
        # generators, so the batch training sees cannot be reproduced here.
        return None, f"{type(trainer).__name__} overrides {custom[0]}, so its training batches are not read ahead"
    n = min(len(dataset), compat.train_batch_size(trainer))
    collator = trainer.data_collator
    try:
        import datasets

        is_hf_dataset = isinstance(dataset, datasets.Dataset)
    except ImportError:
        is_hf_dataset = False
    with SavedRNG(collator):
        if is_hf_dataset:
            dataset = compat.remove_unused_columns(trainer, dataset)
        else:
            collator = compat.collator_with_removed_columns(trainer, collator)
        fetch = getattr(dataset, "__getitems__", None)
        rows = fetch(list(range(n))) if fetch else [dataset[i] for i in range(n)]
        return collator(rows), None


class SavedRNG:
    """Restores the CPU, CUDA, NumPy and Python RNG states on exit — and those of the random generators a collator
    holds as attributes (a `torch.Generator`, `numpy.random.Generator` or `random.Random`, also inside a wrapping
    collator's ``data_collator``): reading the first batch draws nothing that training would see."""

    def __init__(self, collator=None):
        self.owned = []
        seen, todo = set(), [collator]
        while todo:
            obj = todo.pop()
            if obj is None or id(obj) in seen or not hasattr(obj, "__dict__"):
                continue
            seen.add(id(obj))
            for value in vars(obj).values():
                if isinstance(value, (torch.Generator, random.Random)) or hasattr(value, "bit_generator"):
                    self.owned.append(value)
            todo.append(getattr(obj, "data_collator", None))  # transformers' RemoveColumnsCollator

    def __enter__(self):
        self.owned_states = [g.get_state() if isinstance(g, torch.Generator) else g.getstate()
                             if isinstance(g, random.Random) else g.bit_generator.state for g in self.owned]
        self.torch_state = torch.random.get_rng_state()
        self.cuda_state = (torch.cuda.get_rng_state_all()
                           if torch.cuda.is_available() and torch.cuda.is_initialized() else None)
        self.python_state = random.getstate()
        try:
            import numpy

            self.numpy_state = numpy.random.get_state()
        except ImportError:  # pragma: no cover - numpy ships with torch wheels
            self.numpy_state = None
        return self

    def __exit__(self, *exc):
        for g, state in zip(self.owned, self.owned_states):
            if isinstance(g, torch.Generator):
                g.set_state(state)
            elif isinstance(g, random.Random):
                g.setstate(state)
            else:
                g.bit_generator.state = state
        torch.random.set_rng_state(self.torch_state)
        if self.cuda_state is not None:
            torch.cuda.set_rng_state_all(self.cuda_state)
        random.setstate(self.python_state)
        if self.numpy_state is not None:
            import numpy

            numpy.random.set_state(self.numpy_state)
        return False
