"""The CIFAR ResNets of He et al. (2016, § 4.2) as a Hugging Face model: ResNet-20/32/44/56/110.

A 3×3 stem convolution (16 channels) + BN + ReLU, three stages of ``n`` basic blocks (16, 32, 64 channels;
stride 2 at the start of stages 2 and 3), global average pooling and a linear classifier: depth 6n + 2.
Where a block changes the shape, the shortcut is a projection (1×1 conv + BN, the paper's option B), so the
model has all four BatchNorm categories of Kim et al.'s ablation:

========== ===================================== ===================== =========================
category   parameter names                       role (docs/design.md)      paper's guideline
========== ===================================== ===================== =========================
stem       ``resnet.stem.bn.weight``             ``stream``            do not regularize
shortcut   ``…shortcut.bn.weight``               ``stream``            do not regularize
inner      ``…bn1.weight`` (first BN of a block) ``invariant``         regularize (effective LR)
last       ``…bn2.weight`` (second BN)           ``branch``            regularize (variance)
========== ===================================== ===================== =========================

``CifarResNetConfig`` / ``CifarResNetForImageClassification`` are registered with ``AutoConfig`` and
``AutoModelForImageClassification`` when this module is imported, so ``save_pretrained`` /
``from_pretrained`` and the Auto classes work as for any transformers model.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DEPTHS = (8, 14, 20, 26, 32, 44, 56, 110)  # 6n + 2; the paper trains 20, 32, 44, 56, 110


def check_depth(depth) -> int:
    """``depth`` if it is 6n + 2 with n ≥ 1, else a ``ValueError`` naming the valid depths."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"depth must be 6n + 2 with n >= 1 (ResNet-20, 32, 44, 56, 110, ...), got {depth!r}: "
            "each of the 3 stages has n basic blocks of 2 conv layers, plus the stem conv and the classifier")
    return depth


class CifarResNetConfig(PretrainedConfig):
    """Configuration of a CIFAR ResNet.

    Args:
        depth (`int`, defaults to 20): 6n + 2 — 20, 32, 44, 56, 110.
        widths (`list[int]`, defaults to `[16, 32, 64]`): channels of the three stages.
        num_channels (`int`, defaults to 3): input channels.
        image_size (`int`, defaults to 32): input height and width (the model is fully convolutional).
        num_labels (`int`, defaults to 10): classes (CIFAR-10's names in ``id2label`` when 10).
    """

    model_type = "cifar_resnet"

    def __init__(self, depth: int = 20, widths=(16, 32, 64), num_channels: int = 3, image_size: int = 32, **kwargs):
        self.depth = check_depth(depth)
        self.widths = list(widths)
        if len(self.widths) != 3 or not all(isinstance(w, int) and w > 0 for w in self.widths):
            raise ValueError(f"widths must be three positive channel counts, got {widths!r}")
        self.num_channels = num_channels
        self.image_size = image_size
        if "num_labels" not in kwargs and "id2label" not in kwargs:
            kwargs["id2label"] = dict(enumerate(CIFAR10_CLASSES))
        super().__init__(**kwargs)

    @property
    def blocks_per_stage(self) -> int:
        return (self.depth - 2) // 6


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class CifarStem(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv3x3(cin, cout)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class Projection(nn.Module):
    """The shortcut where the shape changes: 1×1 conv (stride 2) + BN — He et al.'s option B."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class BasicBlock(nn.Module):
    """``relu(x + bn2(conv2(relu(bn1(conv1(x))))))``, with a projection on ``x`` when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = Projection(cin, cout, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(out + identity)


class CifarResNetPreTrainedModel(PreTrainedModel):
    config_class = CifarResNetConfig
    base_model_prefix = "resnet"
    main_input_name = "pixel_values"
    _no_split_modules = ["BasicBlock"]

    @torch.no_grad()
    def _init_weights(self, module):
        # He et al.'s initialization: N(0, 2 / fan_out) for convolutions, γ = 1 and β = 0 for BN.
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            if module.num_batches_tracked is not None:
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.Linear):
            super()._init_weights(module)


class CifarResNetModel(CifarResNetPreTrainedModel):
    """Stem and three stages; returns the globally pooled features ``(batch, widths[-1])``."""

    def __init__(self, config: CifarResNetConfig):
        super().__init__(config)
        w = config.widths
        self.stem = CifarStem(config.num_channels, w[0])
        n = config.blocks_per_stage
        stages, cin = [], w[0]
        for s, cout in enumerate(w):
            blocks = [BasicBlock(cin if b == 0 else cout, cout, 2 if (s > 0 and b == 0) else 1) for b in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixel_values)
        for stage in self.stages:
            x = stage(x)
        return x.mean(dim=(2, 3))


class CifarResNetForImageClassification(CifarResNetPreTrainedModel):
    """A CIFAR ResNet with a linear classifier; ``labels`` give the cross-entropy ``loss``."""

    def __init__(self, config: CifarResNetConfig):
        super().__init__(config)
        self.resnet = CifarResNetModel(config)
        self.classifier = nn.Linear(config.widths[-1], config.num_labels)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs):
        logits = self.classifier(self.resnet(pixel_values))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits)


AutoConfig.register(CifarResNetConfig.model_type, CifarResNetConfig, exist_ok=True)
AutoModelForImageClassification.register(CifarResNetConfig, CifarResNetForImageClassification, exist_ok=True)
