"""``python -m benchmarks.commit_cost``: a digest per all-reduce part, after the codec, at a model's size."""
from __future__ import annotations

import pytest
import torch

from benchmarks import commit_cost
from node.averaging.codecs import PART_VALUES
from node.model.gpt import PRESETS
from node.policies.model_size import param_count


def test_a_row_per_codec_over_every_part_of_the_model(capsys):
    commit_cost.main(["--model", "tiny", "--codecs", "fp16,q2ef"])
    out = capsys.readouterr().out
    parts = -(-param_count(PRESETS["tiny"]) // PART_VALUES)
    rows = [line for line in out.splitlines() if line.startswith("| fp16 ") or line.startswith("| q2ef ")]
    assert len(rows) == 2, out
    assert all(f"| {parts} |" in row for row in rows), out
    assert f"lists {parts} digests" in out


def test_digests_name_the_bytes_sent_part_by_part():
    values = torch.randn(3 * PART_VALUES + 5, generator=torch.Generator().manual_seed(1))
    parts, _ = commit_cost.encoded_parts("q2ef", values)
    assert len(parts) == 4
    again, _ = commit_cost.encoded_parts("q2ef", values.clone())
    first, _ = commit_cost.part_digests(parts, "sha256")
    assert commit_cost.part_digests(again, "sha256")[0] == first  # the same update commits to the same digests
    values[PART_VALUES + 7] += 1.0  # one value changed: only its part's digest changes
    changed, _ = commit_cost.part_digests(commit_cost.encoded_parts("q2ef", values)[0], "sha256")
    assert [a != b for a, b in zip(first, changed)] == [False, True, False, False]


def test_an_unknown_codec_is_refused_before_any_work():
    with pytest.raises(ValueError, match="nope"):
        commit_cost.main(["--model", "tiny", "--codecs", "fp16,nope"])
