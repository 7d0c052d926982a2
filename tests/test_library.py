"""pipeline.run, the library beneath the command line, as a front end calls it: a render
with progress through a callback and a typed result, stopped and continued, a soundtrack
decoded once, and checking the video; nothing printed."""

from __future__ import annotations

import dataclasses

import pytest
from test_render_pipeline import write_board

from pipeline import audio, run, shots, store
from pipeline import render as video
from pipeline.check import probe_video
from pipeline.errors import FeverdreamError
from pipeline.settings import Speed


def test_a_render_reports_progress_stops_when_asked_and_continues(tmp_path, tiny_model_dir, capsys):
    story = run.load(write_board(tmp_path))
    options = run.RenderOptions(output=tmp_path / "out", vqgan="tiny", clip="tiny")
    seen: list[run.Progress] = []
    stopped = run.render(story, options, on_progress=seen.append, should_stop=lambda: True)
    # Stopped after the first optimised frame, saved; no video yet.
    assert stopped.stopped and stopped.video is None
    assert stopped.frames_done == 1 < stopped.frames_total == story.plan.n_frames
    # Before the first frame, each stage is named: the models (a VQGAN and a CLIP) loaded,
    # the engine set up and the two prompts embedded; then the frames.
    assert [(p.stage, p.done, p.total) for p in seen] == [
        ("loading", 0, 2),
        ("loading", 2, 2),
        ("preparing", 0, 2),
        ("preparing", 2, 2),
        ("frames", 0, story.plan.n_frames),
        ("frames", 1, story.plan.n_frames),
    ]
    assert [p.unit for p in seen[::2]] == ["model", "prompt", "frame"]  # a bar's unit
    assert sorted(path.name for path in stopped.frames_dir.glob("*.png")) == ["000000.png"]

    seen.clear()
    done = run.render(story, options, on_progress=seen.append)
    assert not done.stopped and done.frames_done == story.plan.n_frames
    made = [p for p in seen if p.stage == "frames"]
    frames = [p.done for p in made]
    encoded = [p.done for p in seen if p.stage == "encoding"]
    # The fast engine's cadence 1 here: a report per frame, continuing after frame 0 (the
    # first report says where the render starts, so a progress bar can start there).
    assert frames == list(range(1, story.plan.n_frames + 1))
    assert encoded == list(range(0, story.plan.n_frames + 1))
    assert all(p.loss is not None for p in made[1:])
    info = probe_video(done.video)
    assert (info.width, info.height) == (360, 640)
    assert info.audio is not None and info.audio.codec == "aac"
    for path in (done.contact_sheet, done.preview_gif, done.summary):
        assert path is not None and path.is_file()
    assert set(done.seconds) == {"frames", "encoding"}
    assert run.check(done.video).accepted
    # A library prints nothing: what happened is in the result and the callbacks.
    assert capsys.readouterr().out == ""


def test_a_render_decodes_the_soundtrack_once(tmp_path, tiny_model_dir, monkeypatch):
    # Loading the storyboard analyses the track; rendering and encoding reuse what that
    # read (length, channels) instead of decoding the file again.
    story = run.load(write_board(tmp_path))

    def decoded_again(*args, **kwargs):
        raise AssertionError("the soundtrack was decoded again")

    monkeypatch.setattr(audio, "_decode", decoded_again)
    monkeypatch.setattr(video, "check_soundtrack", decoded_again)
    options = run.RenderOptions(
        output=tmp_path / "out", vqgan="tiny", clip="tiny", speed=Speed(cadence=2)
    )
    result = run.render(story, options)
    sound = probe_video(result.video).audio
    assert sound is not None and sound.codec == "aac" and sound.channels == 2


def test_a_story_built_without_its_analysis_still_gets_its_soundtrack(tmp_path, tiny_model_dir):
    from pipeline.schedule import build_plan

    board = run.load(write_board(tmp_path)).board
    story = run.Story(board, None, build_plan(board, None))
    options = run.RenderOptions(output=tmp_path / "out", vqgan="tiny", clip="tiny", frames=(0, 6))
    sound = probe_video(run.render(story, options).video).audio
    assert sound is not None and sound.codec == "aac"


def test_a_soundtrack_offset_past_its_end_fails_before_any_frame(tmp_path, tiny_model_dir):
    story = run.load(write_board(tmp_path, tone_seconds=1.0))
    # Frames 40-47 start 1.67 s into a 1 s track.
    options = run.RenderOptions(output=tmp_path / "out", vqgan="tiny", clip="tiny", frames=(40, 48))
    with pytest.raises(FeverdreamError, match="past the end"):
        run.render(story, options)
    assert not (tmp_path / "out").exists()


def test_frames_made_from_a_picture_since_replaced_are_not_continued(tmp_path, tiny_model_dir):
    from PIL import Image

    from pipeline.store import RenderChangedError

    Image.new("RGB", (72, 128), (200, 30, 30)).save(tmp_path / "start.png")
    board = tmp_path / "board.yaml"
    board.write_text(
        "title: t\nduration: 6f\nrender:\n  size: 144x256\n  steps: 1\n  first_steps: 2\n"
        "  cuts: 2\ninit_image: start.png\nkeyframes:\n  - at: 0s\n    prompt: a room\n"
    )
    options = run.RenderOptions(output=tmp_path / "out", vqgan="tiny", clip="tiny", encode=False)
    stopped = run.render(run.load(board), options, should_stop=lambda: True)
    assert stopped.stopped
    Image.new("RGB", (72, 128), (30, 30, 200)).save(tmp_path / "start.png")
    with pytest.raises(RenderChangedError, match="pictures"):
        run.render(run.load(board), options)
    assert sorted(p.name for p in stopped.frames_dir.glob("*.png")) == ["000000.png"]


def test_a_shot_begun_by_an_older_engine_is_refused_with_the_batchs_way_out(
    tmp_path, tiny_model_dir
):
    # A batch's shot folder keeps frames between attempts; one an older engine began (its
    # manifest records no aim: issue 36) is not continued, and the advice is the batch's
    # (which has no --fresh), not render's.
    import json

    from pipeline.store import RenderChangedError

    story = run.load(write_board(tmp_path))
    options = run.RenderOptions(output=tmp_path / "out", vqgan="tiny", clip="tiny", encode=False)
    shot = run.shots(story.plan)[0]
    stopped = run.render_shot(story, options, (shot[0], shot[0] + 2))
    manifest_path = stopped.folder / "frames" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["settings"]["aim"]
    manifest_path.write_text(json.dumps(manifest))
    folder = shots.shot_folder(story, options, shot)
    folder.parent.mkdir(parents=True, exist_ok=True)
    stopped.folder.rename(folder)
    with pytest.raises(RenderChangedError) as refused:
        run.render_shot(story, options, shot)
    said = str(refused.value)
    assert "made by an older engine" in said and "--fresh" not in said
    assert said.endswith(f"delete {folder} and run the batch again")
    assert len(list((folder / "frames").glob("*.png"))) == 2


def test_a_folder_being_rendered_is_not_rendered_twice(tmp_path, tiny_model_dir):
    # Another render (the studio, a second terminal) holds the folder: this one is refused
    # before it touches a frame, and goes ahead once the other is done.
    story = run.load(write_board(tmp_path))
    options = run.RenderOptions(output=tmp_path / "out", vqgan="tiny", clip="tiny", encode=False)
    with store.render_lock(tmp_path / "out"):
        with pytest.raises(FeverdreamError, match=r"being rendered now \(process \d+\)"):
            run.render(story, options)
        assert not (tmp_path / "out" / "frames").exists()
    assert run.render(story, options).frames_done == story.plan.n_frames


@pytest.mark.device
def test_a_video_encoded_while_rendering_is_the_one_encoded_after(tmp_path, tiny_model_dir, device):
    # With cadence 2 the frames between optimised ones are written after the next optimised
    # frame: the encoder still takes them in order, each once it is written.
    story = run.load(write_board(tmp_path))
    after = run.RenderOptions(output=tmp_path / "after", vqgan="tiny", clip="tiny", device=device,
                              speed=Speed(cadence=2), encode_while_rendering=False)  # fmt: skip
    during = dataclasses.replace(after, output=tmp_path / "during", encode_while_rendering=True)
    made_after = run.render(story, after)
    seen: list[run.Progress] = []
    made_during = run.render(story, during, on_progress=seen.append)
    assert made_during.video.read_bytes() == made_after.video.read_bytes()
    # Progress stays in stages: the models, the prompts, every frame, then what is left of
    # the encoding.
    stages = [p.stage for p in seen]
    assert stages == sorted(stages, key=["loading", "preparing", "frames", "encoding"].index)
    assert seen[-1] == run.Progress("encoding", story.plan.n_frames, story.plan.n_frames)
    assert sorted(p.name for p in (tmp_path / "during").iterdir()) == sorted(
        p.name for p in (tmp_path / "after").iterdir()
    )


def test_a_render_stopped_or_failing_while_encoding_leaves_no_video(tmp_path, tiny_model_dir):
    story = run.load(write_board(tmp_path))
    options = run.RenderOptions(output=tmp_path / "out", vqgan="tiny", clip="tiny",
                                encode_while_rendering=True)  # fmt: skip
    asked = iter([False, False, True])
    stopped = run.render(story, options, should_stop=lambda: next(asked, True))
    assert stopped.stopped and stopped.video is None
    left = {p.name for p in (tmp_path / "out").iterdir()}
    assert left == {"frames"}, left  # no video, no partial file, no lock

    def broken(progress: run.Progress) -> None:
        if progress.stage == "frames" and progress.done == 5:
            raise RuntimeError("the machine fell over")

    with pytest.raises(RuntimeError, match="fell over"):
        run.render(story, options, on_progress=broken)
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"frames"}
    # Continued, the render makes the video a render in one go makes.
    whole = run.render(story, dataclasses.replace(options, output=tmp_path / "whole"))
    assert run.render(story, options).video.read_bytes() == whole.video.read_bytes()
