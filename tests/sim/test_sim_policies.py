"""The pure policies added for the simulator (node/policies/model_size.py, grouping.py)."""
from __future__ import annotations

import random

import pytest

from node.policies.grouping import form_groups, group_sizes
from node.policies.model_size import param_count, train_flops_per_token
from protocol import ModelSpec
from sim.scenarios import MODELS


def test_param_count_of_the_tiny_preset_by_hand():
    # 4 blocks x (12 d^2 + 13 d) + (vocab + block) d + 2 d, d = 128
    assert param_count(ModelSpec("tiny", 4, 4, 128, 128, 256)) == 4 * (12 * 128**2 + 13 * 128) + (256 + 128) * 128 + 256
    assert param_count(MODELS["125m"]) == pytest.approx(124.4e6, rel=0.01)  # GPT-2 small with its BPE vocab


@pytest.mark.parametrize("preset", ["tiny", "small", "gpt2-small-bytes", "gpt2-124m"])
def test_param_count_matches_the_torch_model(preset):
    torch = pytest.importorskip("torch")
    model = pytest.importorskip("node.model.gpt")
    with torch.device("meta"):  # shapes without memory or init time
        gpt = model.GPT(model.PRESETS[preset])
    assert param_count(model.PRESETS[preset]) == gpt.num_params()


def test_the_sims_tiny_model_is_the_nodes_tiny_preset():
    model = pytest.importorskip("node.model.gpt")
    assert MODELS["tiny"] == model.PRESETS["tiny"]


def test_train_flops_per_token_is_six_per_param_plus_attention():
    spec = MODELS["125m"]
    flops = train_flops_per_token(spec)
    assert 6 * (param_count(spec) - 1024 * 768) < flops < 6 * param_count(spec) + 12 * 12 * 768 * 1024 + 1


@pytest.mark.parametrize(
    "n, target, expected", [(0, 4, []), (1, 4, [1]), (4, 4, [4]), (5, 4, [3, 2]), (17, 16, [9, 8]), (32, 16, [16, 16])]
)
def test_group_sizes_are_balanced(n, target, expected):
    assert group_sizes(n, target) == expected


def test_group_sizes_rejects_nonsense():
    with pytest.raises(ValueError):
        group_sizes(5, 0)


def test_form_groups_is_a_partition_and_reproducible():
    members = list(range(100))
    groups = form_groups(members, 16, random.Random(1))
    assert sorted(i for g in groups for i in g) == members
    assert max(map(len, groups)) - min(map(len, groups)) <= 1 and max(map(len, groups)) <= 16
    assert groups == form_groups(members, 16, random.Random(1))
    assert groups != form_groups(members, 16, random.Random(2))


def test_tiered_groups_put_similar_links_together():
    speed = {i: float(i % 10) for i in range(40)}
    groups = form_groups(list(speed), 10, random.Random(0), key=speed.__getitem__)
    assert sorted(i for g in groups for i in g) == list(range(40))
    for faster, slower in zip(groups, groups[1:]):  # fastest tier first, tiers do not overlap
        assert min(speed[i] for i in faster) >= max(speed[i] for i in slower)
    assert groups[0] == [9, 19, 29, 39, 8, 18, 28, 38, 7, 17]  # ties keep the input order
