"""Train a CIFAR ResNet (He et al., 2016) from scratch on CIFAR-10 with `GammaRegTrainer`: the paper's BN setting.

SGD (momentum 0.9, Nesterov), lr 0.1, batch 128, weight decay 5e-4 as coupled L2 (torch's SGD adds λ·θ to the
gradient, as the paper does), cosine schedule after a short warm-up, 4-pixel pad + random crop + horizontal
flip. Every BatchNorm category exists — stem, shortcut (projection), inner (first BN of a block), last
(second BN) — so the γ policies of Kim et al.'s ablation can be compared:

    python recipes/cifar_resnet.py recipes/configs/cifar_resnet_cpu.yaml --gamma_policy guidelines
    python recipes/cifar_resnet.py recipes/configs/cifar_resnet_cpu.yaml --gamma_policy none --gamma_include 'shortcut'
    accelerate launch recipes/cifar_resnet.py recipes/configs/cifar_resnet_gpu.yaml --gamma_policy all
    python recipes/sweep.py --recipe recipes/cifar_resnet.py --config recipes/configs/cifar_resnet_cpu.yaml \\
        --name cifar10_resnet_cpu --seeds 0 1 2 --baseline none \\
        --policies none stem=none@include='(^|\\.)(stem|embedder)\\.' ...

``--model_type hf_resnet`` trains transformers' own ``ResNetForImageClassification`` (basic blocks, the same
stage widths and depths; its stem is the ImageNet one, 7×7 stride 2 + max-pool) instead of the CIFAR model.

Data: ``--data_dir`` holds ``cifar10-jpeg.tar.xz`` (``../shared/data/cifar10-jpeg``). The archive is decoded
once with Pillow into uint8 arrays cached in ``--cache_dir``; the images then live in memory as one tensor and
each batch is gathered, cropped, flipped and normalized in torch (no per-image Python), which keeps the data
path to a few percent of a step. The run log prints images/s; ``results.json`` records it, the share of the
training time spent in the data path, test accuracy on all 10,000 test images, and the RMS of γ per BN
category at the start and the end of training.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import tarfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from modeling_cifar_resnet import CIFAR10_CLASSES, CifarResNetConfig, CifarResNetForImageClassification, check_depth
from recipe_utils import (
    GammaTrajectoryCallback,
    RunArguments,
    Stopwatch,
    ThroughputCallback,
    compute_accuracy,
    gamma_record,
    gamma_rms,
    parse_args,
    write_results,
)
from torch.utils.data import DataLoader, Dataset
from transformers import HfArgumentParser, set_seed

from hf_gammareg import GammaRegTrainer, GammaRegTrainingArguments
from hf_gammareg.analysis import find_gammas

ARCHIVE = "cifar10-jpeg.tar.xz"
ARCHIVE_SHA256 = "7c52ef8221dfe04a67ff68b9796223102f4e994c2a9bfc6a97958fab6d8ee123"
N_TRAIN, N_TEST = 50_000, 10_000
# Per-channel mean and std of the CIFAR-10 training images (the usual constants, on a 0-1 scale).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
PAPER = {}  # Kim et al. report per-category accuracy changes (+1-4 % / -1-3 %), not one accuracy to compare with
MODEL_TYPES = ("cifar_resnet", "hf_resnet")
# BN categories of the ablation, by parameter name, for both model types (the CIFAR model's names / HF ResNet's).
CATEGORIES = {
    "stem": re.compile(r"(^|\.)(stem|embedder)\."),
    "shortcut": re.compile(r"\.shortcut\."),
    "inner": re.compile(r"\.(bn1|layer\.0\.normalization)\."),
    "last": re.compile(r"\.(bn2|layer\.1\.normalization)\."),
}


@dataclass
class CifarArguments(RunArguments):
    data_dir: str = field(default="../shared/data/cifar10-jpeg", metadata={"help": f"Directory holding {ARCHIVE}."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where the decoded uint8 arrays are cached (default ~/.cache/hf_gammareg)."})
    model_type: str = field(default="cifar_resnet", metadata={"help": "CIFAR ResNet or transformers' ResNet.",
                                                              "choices": list(MODEL_TYPES)})
    depth: int = field(default=20, metadata={"help": "6n + 2: 20, 32, 44, 56, 110."})
    train_per_class: int | None = field(
        default=None, metadata={"help": "Train on the first N images of each class (a fixed, balanced subset)."})
    test_per_class: int | None = field(default=None, metadata={"help": "Test on the first N images of each class."})
    channels_last: bool = field(default=True, metadata={"help": "channels-last memory format (faster on CPU)."})
    trajectory_window: int = field(
        default=100, metadata={"help": "Steps per point of the γ RMS / effective-step trajectory in results.json."})


def make_parser() -> HfArgumentParser:
    return HfArgumentParser((CifarArguments, GammaRegTrainingArguments))


# -- data ---------------------------------------------------------------------------------------------
def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def archive_path(data_dir: str) -> str:
    """The archive's path, or a ``FileNotFoundError`` that says what to pass."""
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"--data_dir {data_dir!r} is not a directory; pass the directory that holds {ARCHIVE} "
            "(e.g. --data_dir ../shared/data/cifar10-jpeg)")
    path = os.path.join(data_dir, ARCHIVE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{data_dir!r} has no {ARCHIVE}; "
                                "pass --data_dir pointing at the directory that holds it")
    return path


def decode_archive(path: str, digest: str | None = None) -> dict[str, np.ndarray]:
    """Decode every JPEG of the archive: ``{train,test}_{x,y}``, images as uint8 ``(N, 32, 32, 3)``.

    The CIFAR-10 archive itself (``digest`` = its sha256) must hold all 50,000 + 10,000 images; another
    archive in the same layout (a subset, a synthetic test set) needs every class in both splits.
    """
    from PIL import Image

    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with transformers
        tqdm = None
    class_index = {name: i for i, name in enumerate(CIFAR10_CLASSES)}
    parts: dict[str, list] = {"train": [], "test": []}
    try:
        with tarfile.open(path, "r:*") as archive:
            members = archive if tqdm is None else tqdm(archive, total=N_TRAIN + N_TEST + 12, desc="decoding CIFAR-10",
                                                        unit="img", mininterval=2)
            for member in members:
                match = re.fullmatch(r"(?:.*/)?(train|test)/(\w+)/(\d+)\.jpe?g", member.name)
                if not member.isfile() or match is None:
                    continue
                split, cls, rank = match.group(1), match.group(2), int(match.group(3))
                if cls not in class_index:
                    raise ValueError(f"unknown class directory {cls!r} in {path}")
                data = archive.extractfile(member).read()
                with Image.open(io.BytesIO(data)) as image:
                    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
                if array.shape != (32, 32, 3):
                    raise ValueError(f"{member.name}: expected a 32x32 image, got {array.shape}")
                parts[split].append((class_index[cls], rank, array))
    except (tarfile.TarError, EOFError, OSError) as exc:  # lzma.LZMAError and PIL's errors are OSErrors
        raise ValueError(
            f"{path} is corrupt or incomplete ({type(exc).__name__}: {exc}); its sha256 should be "
            f"{ARCHIVE_SHA256}. Copy the archive again (see ../shared/data/README.md).") from exc
    out = {}
    for split, expected in (("train", N_TRAIN), ("test", N_TEST)):
        rows = sorted(parts[split], key=lambda r: (r[0], r[1]))  # class, then rank within the class
        missing = sorted(set(range(len(CIFAR10_CLASSES))) - {r[0] for r in rows})
        if (digest == ARCHIVE_SHA256 and len(rows) != expected) or missing:
            raise ValueError(f"{path}: {len(rows)} {split} images"
                             + (f", none of class {[CIFAR10_CLASSES[c] for c in missing]}" if missing else "")
                             + f"; the archive is incomplete. CIFAR-10's has {expected} and sha256 {ARCHIVE_SHA256}.")
        out[f"{split}_x"] = np.stack([r[2] for r in rows])
        out[f"{split}_y"] = np.array([r[0] for r in rows], dtype=np.int64)
    return out


def load_cifar10(data_dir: str, cache_dir: str | None = None) -> dict[str, np.ndarray]:
    """CIFAR-10 as uint8 arrays, decoded once and cached under ``cache_dir`` keyed by the archive's sha256."""
    path = archive_path(data_dir)
    digest = sha256(path)
    cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "hf_gammareg")
    cache = os.path.join(cache_dir, f"cifar10-{digest[:16]}.npz")
    if os.path.isfile(cache):
        try:
            with np.load(cache) as f:
                return {k: f[k] for k in ("train_x", "train_y", "test_x", "test_y")}
        except (OSError, ValueError, KeyError):
            pass  # a cache cut short by a crash: decode again
    data = decode_archive(path, digest)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{cache}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **data)
    os.replace(tmp, cache)  # atomic: concurrent runs never read a half-written cache
    return data


def first_per_class(labels: np.ndarray, per_class: int | None) -> np.ndarray:
    """Indices of the first ``per_class`` images of each class (all if ``None``): a fixed, balanced subset."""
    if per_class is None:
        return np.arange(len(labels))
    counts = np.bincount(labels)
    if per_class < 1 or per_class > counts.min():
        raise ValueError(f"per-class subset size must be between 1 and {counts.min()}, got {per_class}")
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(counts))])


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Zero-pad by ``pad`` pixels, crop back at a random offset and flip half the images, for a whole batch.

    ``images`` is uint8 ``(B, C, H, W)``; one gather does every crop (no loop over images).
    """
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = dy + torch.arange(h)  # (B, H)
    cols = dx + torch.arange(w)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # reading the columns backwards is the flip
    return padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


class IndexDataset(Dataset):
    """Item ``i`` is ``i``: the batch is gathered from the in-memory tensor by the collator."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class CifarBatches:
    """Collator: indices → a normalized, augmented batch ``{"pixel_values", "labels"}``; times itself."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, augment: bool, seed: int, channels_last: bool,
                 dtype: torch.dtype = torch.float32):
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))  # uint8 NCHW
        self.labels = torch.from_numpy(labels)
        self.augment, self.channels_last, self.dtype = augment, channels_last, dtype
        self.generator = torch.Generator().manual_seed(seed)
        # (x / 255 - mean) / std as one multiply-add.
        self.scale = (1.0 / (255.0 * torch.tensor(STD))).view(1, 3, 1, 1)
        self.shift = (-torch.tensor(MEAN) / torch.tensor(STD)).view(1, 3, 1, 1)
        self.seconds = 0.0

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        start = time.perf_counter()
        idx = torch.as_tensor(indices)
        x = self.images[idx]
        if self.augment:
            x = random_crop_flip(x, self.generator)
        x = torch.addcmul(self.shift, x.float(), self.scale).to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        batch = {"pixel_values": x, "labels": self.labels[idx]}
        self.seconds += time.perf_counter() - start
        return batch


class EpochBatchSampler:
    """Batches of a permutation drawn from ``seed + epoch``: the data order is pinned by the seed alone."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = False):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.shuffle, self.drop_last, self.epoch = shuffle, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1  # advance even when nobody calls set_epoch
        order = np.random.default_rng(self.seed + epoch).permutation(self.n) if self.shuffle else np.arange(self.n)
        for k in range(len(self)):
            yield order[k * self.batch_size:(k + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)


class CifarTrainer(GammaRegTrainer):
    """`GammaRegTrainer` whose data loaders gather batches from in-memory tensors (see `CifarBatches`)."""

    def __init__(self, *args, train_batches: CifarBatches, eval_batches: CifarBatches, **kwargs):
        self.train_batches, self.eval_batches = train_batches, eval_batches
        super().__init__(*args, **kwargs)

    def _loader(self, batches: CifarBatches, batch_size: int, train: bool) -> DataLoader:
        n = len(batches.labels)
        sampler = EpochBatchSampler(n, batch_size, self.args.seed, shuffle=train,
                                    drop_last=train and self.args.dataloader_drop_last)
        loader = DataLoader(IndexDataset(n), batch_sampler=sampler, collate_fn=batches, num_workers=0)
        return self.accelerator.prepare(loader)

    def get_train_dataloader(self) -> DataLoader:
        return self._loader(self.train_batches, self._train_batch_size, train=True)

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        return self._loader(self.eval_batches, self.args.eval_batch_size, train=False)


def gamma_category(name: str) -> str | None:
    return next((cat for cat, pattern in CATEGORIES.items() if pattern.search(name)), None)


def gamma_rms_by_category(model: torch.nn.Module, gammas: set[str]) -> dict[str, float]:
    """Root mean square of the γ values in each BN category (1.0 at initialization)."""
    by_category: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        cat = gamma_category(name) if name in gammas else None
        if cat is not None:
            by_category.setdefault(cat, []).append(name)
    return gamma_rms(model, by_category)


def build_model(args: CifarArguments, num_labels: int):
    if args.model_type == "cifar_resnet":
        return CifarResNetForImageClassification(CifarResNetConfig(depth=args.depth, num_labels=num_labels,
                                                                   id2label=dict(enumerate(CIFAR10_CLASSES))))
    from transformers import ResNetConfig, ResNetForImageClassification

    n = (args.depth - 2) // 6
    config = ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32, 64], depths=[n, n, n],
                          layer_type="basic", hidden_act="relu", downsample_in_first_stage=False,
                          num_labels=num_labels, id2label=dict(enumerate(CIFAR10_CLASSES)))
    return ResNetForImageClassification(config)


def main(argv: list[str] | None = None) -> int:
    args, training_args = parse_args(make_parser(), argv)
    # Every check that needs no training comes first: a wrong flag must not cost a decode or a run.
    check_depth(args.depth)
    if args.model_type not in MODEL_TYPES:
        raise ValueError(f"--model_type must be one of {MODEL_TYPES}, got {args.model_type!r}")
    archive_path(args.data_dir)
    if args.torch_num_threads:
        torch.set_num_threads(args.torch_num_threads)
    clock = Stopwatch()
    data = load_cifar10(args.data_dir, args.cache_dir)
    train_idx = first_per_class(data["train_y"], args.train_per_class)
    test_idx = first_per_class(data["test_y"], args.test_per_class)
    train = CifarBatches(data["train_x"][train_idx], data["train_y"][train_idx], augment=True,
                         seed=training_args.seed, channels_last=args.channels_last)
    test = CifarBatches(data["test_x"][test_idx], data["test_y"][test_idx], augment=False,
                        seed=training_args.seed, channels_last=args.channels_last)

    set_seed(training_args.seed)  # pins the initial weights; the Trainer seeds only after the model exists
    model = build_model(args, num_labels=len(CIFAR10_CLASSES))
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # 10,000 images / 128 = 79 steps per epoch on one device (50,000 / 128 = 391).
    images_per_step = (training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
                       * max(1, training_args.world_size))
    gamma_names = set(find_gammas(model))
    trajectory = GammaTrajectoryCallback(gamma_category, gamma_names, lambda: trainer.gamma_plan,
                                         window=args.trajectory_window)
    trainer = CifarTrainer(model=model, args=training_args, train_dataset=IndexDataset(len(train_idx)),
                           eval_dataset=IndexDataset(len(test_idx)), compute_metrics=compute_accuracy,
                           train_batches=train, eval_batches=test,
                           callbacks=[ThroughputCallback(images_per_step), trajectory])
    gamma_start = gamma_rms_by_category(model, gamma_names)
    train_start = time.perf_counter()
    train_out = trainer.train()
    train_seconds = time.perf_counter() - train_start
    gamma_end = gamma_rms_by_category(trainer.model, gamma_names)
    metrics = trainer.evaluate()
    if args.save_model:
        trainer.save_model()
    gammas = gamma_record(trainer)
    images = len(train_idx) * training_args.num_train_epochs if training_args.max_steps <= 0 else (
        training_args.max_steps * images_per_step)
    images_per_s = images / train_seconds
    data_share = train.seconds / train_seconds
    print_ = trainer.accelerator.print
    print_(f"hf_gammareg: {gammas['summary']}")
    horizon = trajectory.horizon()
    print_(f"decay horizon (measured): Σ lr·λ/(1 − momentum) = {horizon['decay_horizon']:.3f} over "
           f"{horizon['steps']:,} steps; weight decay alone shrinks a decayed parameter to {horizon['shrink']:.3f}")
    print_(f"trained on {images:,} images ({len(train_idx):,} distinct) at {images_per_s:.0f} images/s "
           f"(data path {100 * data_share:.1f} % "
           f"of the training time); test accuracy {metrics['eval_accuracy']:.2f} % on {len(test_idx):,} images")
    print_("γ RMS by BN category, start -> end: " + ", ".join(
        f"{cat} {gamma_start[cat]:.3f} -> {gamma_end[cat]:.3f}" for cat in CATEGORIES if cat in gamma_end))
    decayed_by_category = {cat: sorted(n for n in trainer.gamma_plan.decayed if gamma_category(n) == cat)
                           for cat in CATEGORIES}
    write_results(trainer, args.results_path(training_args.output_dir), {
        "recipe": "cifar_resnet", "model_type": args.model_type, "depth": args.depth, "seed": training_args.seed,
        "n_train": len(train_idx), "n_eval": len(test_idx), "train_loss": train_out.training_loss,
        "metrics": {"accuracy": metrics["eval_accuracy"]}, "primary_metric": "accuracy", "paper": PAPER,
        "images_per_s": round(images_per_s, 1), "data_share": round(data_share, 4),
        "threads": torch.get_num_threads(),
        "gamma_rms_start": gamma_start, "gamma_rms_end": gamma_end,
        "decayed_by_category": {cat: len(v) for cat, v in decayed_by_category.items()},
        "table_columns": {
            "decay_horizon": horizon["decay_horizon"], "shrink": horizon["shrink"],
            "images_per_s": round(images_per_s, 1), "data_share": round(data_share, 4),
            **{f"decayed_{cat}": len(v) for cat, v in decayed_by_category.items()},
            **{f"gamma_rms_{cat}": v for cat, v in gamma_end.items()},
        },
        "decay_horizon_measured": horizon, "gamma_trajectory": trajectory.trajectory,
        "gamma": gammas, "wall_s": clock.seconds(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
