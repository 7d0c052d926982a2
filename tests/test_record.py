"""A render's record of its models (pipeline/record.py): written as manifests have always
written them, and read back the same whichever way a CLIP was written."""

from __future__ import annotations

import pytest

from pipeline.record import RANDOM_WEIGHTS, ModelsUsed, ModelUsed

ONE = ModelsUsed(ModelUsed("shapes", "aa11"), (ModelUsed("shapes", "bb22"),))
TWO = ModelsUsed(
    ModelUsed("tiny", RANDOM_WEIGHTS),
    (ModelUsed("ViT-B/32", "cc33", 0.75), ModelUsed("RN50", "dd44", 0.25)),
)


def test_one_clip_of_weight_one_is_written_as_before_several_clips_were_possible():
    assert ONE.to_json() == {
        "vqgan": {"name": "shapes", "sha256": "aa11"},
        "clip": {"name": "shapes", "sha256": "bb22"},
    }
    assert TWO.to_json()["clip"] == [
        {"name": "ViT-B/32", "sha256": "cc33", "weight": 0.75},
        {"name": "RN50", "sha256": "dd44", "weight": 0.25},
    ]


@pytest.mark.parametrize("models", [ONE, TWO])
def test_what_is_written_reads_back_the_same(models):
    assert ModelsUsed.from_json(models.to_json()) == models


def test_a_lone_clip_written_as_a_list_reads_as_the_same_models():
    as_list = {**ONE.to_json(), "clip": [{"name": "shapes", "sha256": "bb22", "weight": 1.0}]}
    assert ModelsUsed.from_json(as_list) == ONE
    assert ModelsUsed.from_json(as_list).names() == [("shapes", None), ("shapes", 1.0)]


def test_random_weights_are_told_model_by_model():
    assert TWO.random == (True, False, False) and ONE.random == (False, False)


@pytest.mark.parametrize(
    "data",
    [
        None,
        {},
        {"vqgan": {"name": "shapes", "sha256": "aa11"}},  # no CLIP
        {"vqgan": {"name": "shapes"}, "clip": [{"sha256": "bb22", "weight": 1}]},  # no name
        {"vqgan": {"name": "shapes"}, "clip": [{"name": "a", "weight": "heavy"}]},
        {"vqgan": "shapes", "clip": {"name": "shapes"}},
    ],
)
def test_a_record_naming_no_models_or_not_as_written_reads_as_none(data):
    assert ModelsUsed.from_json(data) is None
