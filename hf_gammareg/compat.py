"""The private torch/transformers APIs the package touches, each behind one function with why it is needed.

Private names move between releases; keeping every use here means one file to check when transformers or torch
changes, and one place to add a fallback.
"""

from __future__ import annotations


def train_batch_size(trainer) -> int:
    """``Trainer._train_batch_size``: the per-device batch training uses (``auto_find_batch_size`` may have
    lowered it below ``args.per_device_train_batch_size``)."""
    return trainer._train_batch_size


def remove_unused_columns(trainer, dataset):
    """``Trainer._remove_unused_columns``: the columns of a `datasets.Dataset` the model's forward does not take
    dropped exactly as training's dataloader drops them (``remove_unused_columns=True``)."""
    return trainer._remove_unused_columns(dataset, description="training")


def collator_with_removed_columns(trainer, collator):
    """``Trainer._get_collator_with_removed_columns``: the same filtering, for a dataset that is not a
    `datasets.Dataset` (the collator drops the keys)."""
    return trainer._get_collator_with_removed_columns(collator, description="training")
