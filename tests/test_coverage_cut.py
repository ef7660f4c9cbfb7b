"""The coverage benchmark's layer cut keeps a default config consistent: a backbone's stages follow its layers,
hooks a parent config keeps into a sub-model's layers follow that sub-model's cut, and a model whose layers are
stages keeps one entry per kept stage in every per-stage list. Configs only: nothing is built."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest
from transformers import AutoConfig

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "architecture_coverage.py"


@pytest.fixture(scope="module")
def coverage():
    spec = importlib.util.spec_from_file_location("architecture_coverage", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_backbone_stages_follow_the_cut(coverage):
    config = AutoConfig.for_model("vitpose_backbone")  # 12 layers, stem + 12 stages, the last one out
    coverage.shrink(config)
    assert config.stage_names == ["stem", "stage1", "stage2"]
    assert config.out_indices == [2] and config.out_features == ["stage2"]


def test_several_backbone_outputs_map_to_the_same_depth_fraction(coverage):
    config = AutoConfig.for_model("rf_detr")  # DINOv2 backbone, 12 layers, stages 2, 5, 8, 11 out
    coverage.shrink(config)
    assert config.backbone_config.out_features == ["stage1", "stage2"]


def test_stages_that_follow_depths_stay(coverage):
    config = AutoConfig.for_model("mask2former")  # Swin: its stages follow `depths`, not the layer count
    names = list(config.backbone_config.stage_names)
    coverage.shrink(config)
    assert config.backbone_config.stage_names == names


def test_hooks_into_a_sub_model_follow_its_cut(coverage):
    config = AutoConfig.for_model("depth_pro")  # hooks (11, 5) into a 12-layer patch encoder
    coverage.shrink(config)
    assert tuple(config.intermediate_hook_ids) == (1, 0)


def test_per_stage_lists_keep_the_kept_stages(coverage):
    config = AutoConfig.for_model("muse_spark_audio")  # 4 stages, a width, depth and patch size each
    coverage.shrink(config)
    assert config.num_hidden_layers == 2
    assert list(config.hidden_sizes) == [256, 512] and list(config.depths) == [2, 2]
    assert config.samples_per_token == 16 * 6
