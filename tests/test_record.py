"""A render's record (pipeline/record.py), the one module that reads and writes it: its models
written as records have always written them and read back the same whichever way a CLIP was
written; older records migrated in one place; render.json written and read back, and one this
feverdream cannot read refused, saying what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import record
from pipeline.errors import RenderChangedError
from pipeline.record import RANDOM_WEIGHTS, ModelsUsed, ModelUsed
from pipeline.store import FrameStore

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"

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


def test_render_json_records_the_run(tmp_path):
    summary = record.Summary(
        storyboard_sha256="ab" * 32,
        seed=1312,
        models={"vqgan": {"name": "tiny", "sha256": "cd" * 32}},
        device="cpu",
        frames={0: record.FrameRecord(0.9, 1.5), 1: record.FrameRecord(None, 0.2)},
        total_seconds=1.7,
    )
    data = json.loads(record.write_summary(tmp_path, summary).read_text())
    assert data["seed"] == 1312 and data["frames"][1] == {"frame": 1, "seconds": 0.2, "loss": None}
    assert {"python", "ffmpeg", "numpy", "av"} <= set(data["versions"])
    assert record.read_summary(tmp_path) == summary


def test_a_render_json_this_feverdream_cannot_read_is_refused_saying_what_to_do(tmp_path):
    (tmp_path / "render.json").write_text(json.dumps({"seed": 1, "frames": []}))
    with pytest.raises(record.RecordError, match="delete it and run again"):
        record.read_summary(tmp_path)
    assert record.read_summary(tmp_path / "nothing") is None


SETTINGS = {"seed": 3, "steps": 2, "aim": {"lag_steps": 36}, "execution": {"compile": False}}


def test_a_version_1_record_reads_as_this_version_would_have_written_it(tmp_path):
    # Version 1 left colour coherence and the camera hold out when they were off.
    old = {"version": 1, "settings": SETTINGS, "plan": [{"t": 0.0}], "frames": {"0": {
        "loss": 0.5, "seconds": 1.0}}}  # fmt: skip
    store = FrameStore(tmp_path)
    record.path(tmp_path).parent.mkdir(parents=True)
    record.path(tmp_path).write_text(json.dumps(old))
    read = record.read(store)
    now = record.Record({**SETTINGS, "color_coherence": "off", "camera_hold": 0}, [{"t": 0.0}])
    assert read.settings == now.settings and record.changes(read, now, frames_done=1) == []
    assert read.frames == {0: record.FrameRecord(0.5, 1.0)}
    # Written again, it is this version's.
    record.write(store, read)
    assert json.loads(record.path(tmp_path).read_text())["version"] == record.VERSION
    # An older engine's (no aim) is read as it was, for whoever refuses it to say so.
    unaimed = {k: v for k, v in SETTINGS.items() if k != "aim"}
    record.path(tmp_path).write_text(json.dumps({**old, "settings": unaimed}))
    assert not record.read(store).aims_ahead and record.read(store).settings == unaimed


def test_a_damaged_record_is_refused_with_the_way_to_start_over(tmp_path):
    record.path(tmp_path).parent.mkdir(parents=True)
    record.path(tmp_path).write_text('{"settings": ')
    with pytest.raises(RenderChangedError, match="damaged.*--fresh"):
        record.read(FrameStore(tmp_path))
    with pytest.raises(RenderChangedError, match="(?s)damaged.*delete the shot"):
        record.read(FrameStore(tmp_path, start_over="delete the shot"))
    assert record.frames_done(tmp_path) == 0
    # One from a newer feverdream is not damaged: it says so, and where to finish it.
    record.path(tmp_path).write_text(json.dumps({"version": record.VERSION + 1}))
    with pytest.raises(RenderChangedError, match="newer feverdream.*finish the render with"):
        record.read(FrameStore(tmp_path))


def test_settings_that_differ_are_said_key_by_key_and_an_execution_only_once_it_made_frames():
    old = record.Record(SETTINGS, [])
    new = record.Record({**SETTINGS, "steps": 3, "execution": {"compile": True}}, [])
    assert record.changes(old, new, frames_done=2) == [
        "execution.compile: False → True", "steps: 2 → 3"]  # fmt: skip
    assert record.changes(old, new, frames_done=0) == ["steps: 2 → 3"]
    assert record.same_render(old, record.Record({**SETTINGS, "execution": {}}, []))
    assert not record.same_render(old, new)


def test_no_other_module_names_the_records_files():
    # The record's files are this module's: every other reader asks it.
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "record.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert "manifest.json" not in text and "render.json" not in text, path
