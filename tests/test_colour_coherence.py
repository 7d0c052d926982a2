"""Colour coherence: each frame's colours matched to its shot's first frame before it is
optimised (render.color_coherence: lab or rgb), as Deforum does, so a long zoom does not
drift in colour; measured by `pipeline.score`'s colour drift."""

from __future__ import annotations

import shapes_checks as checks
import torch

from pipeline import run
from pipeline.colour import lab_to_rgb, match_colours, rgb_to_lab
from pipeline.score import score
from pipeline.settings import Speed


def picture(seed: int) -> torch.Tensor:
    return torch.rand(1, 3, 32, 24, generator=torch.Generator().manual_seed(seed))


def test_rgb_matching_gives_each_channel_the_references_values():
    image, reference = picture(0), picture(1) * 0.5
    matched = match_colours(image, reference, "rgb")
    for channel in range(3):
        got = matched[0, channel].flatten().sort().values
        assert torch.equal(got, reference[0, channel].flatten().sort().values)
    # The picture is kept: its brightest pixel in a channel stays the brightest.
    assert torch.equal(matched[0, 0].argmax(), image[0, 0].argmax())


def test_lab_round_trips_and_matching_to_itself_changes_nothing():
    image = picture(2)
    assert (lab_to_rgb(rgb_to_lab(image)) - image).abs().max() < 1e-4
    assert (match_colours(image, image, "lab") - image).abs().max() < 1e-4
    # Greyer reference, greyer result: the Lab chroma of the matched picture is the reference's.
    grey = image.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1) * 0.9 + image * 0.1
    chroma = rgb_to_lab(match_colours(image, grey, "lab"))[:, 1:].abs().mean()
    assert chroma < rgb_to_lab(image)[:, 1:].abs().mean() * 0.5


def test_a_long_zoom_drifts_less_in_colour_with_coherence(shapes_models, tmp_path):
    # Coherence is for the colour a prompt leaves free: "a large circle" names none, so
    # without it each seed's colour wanders as the camera pushes in. Measured on the
    # reference build (4 s zoom of 1.03 a frame, cadence 4, seeds 0-2, Intel AVX-512):
    # colour drift (mean ΔE from the shot's first frame) summed 21.9 off, 11.8 with rgb
    # (0.54 of it; each seed 0.51-0.60) and 17.1 with lab; bench/RESULTS.md "Colour that
    # holds" has the figures for other kernels. A prompt that names its colour (a red circle)
    # is no test of it: there the colour moves with what the camera shows, and coherence
    # only pulls against the prompt (30.2 off, 28.8 rgb on the same machine). Every seed about
    # halves on every kernel measured (0.50-0.64 of off), so two seeds of the three keep the
    # check's room (issue 34: make test's time).
    speed = Speed(cadence=4, bf16=False)
    drift = {}
    for mode in ("off", "rgb"):
        drift[mode] = 0.0
        for seed in range(2):
            keyframes = '- at: 0s\n  prompt: "a large circle on a black background"\n'
            board = checks.storyboard(seed, "4s", keyframes + "  zoom: 1.03\n")
            board = board.replace("  lr:", f"  color_coherence: {mode}\n  lr:")
            folder = tmp_path / f"{mode}{seed}"
            checks.render(shapes_models, folder, board, speed, read=lambda pixels: None)
            drift[mode] += score(folder / "out").colour_drift.mean
    assert drift["rgb"] < 0.9 * drift["off"], drift


def test_a_resumed_render_with_coherence_makes_the_same_frames(tmp_path, tiny_model_dir):
    board = tmp_path / "board.yaml"
    board.write_text(
        "title: t\nduration: 10f\nrender:\n  size: 144x256\n  steps: 1\n  first_steps: 2\n"
        "  cuts: 2\n  cadence: 2\n  color_coherence: lab\n"
        "keyframes:\n  - at: 0s\n    prompt: a room\n    zoom: 1.05\n"
    )
    story = run.load(board)

    def options(out):
        return run.RenderOptions(output=tmp_path / out, vqgan="tiny", clip="tiny", encode=False)

    whole = run.render(story, options("whole"))
    asked = iter([False, True])
    stopped = run.render(story, options("parts"), should_stop=lambda: next(asked, True))
    assert stopped.stopped and 0 < stopped.frames_done < 10
    resumed = run.render(story, options("parts"))
    assert not resumed.stopped
    for index in range(10):
        name = f"{index:06d}.png"
        assert (whole.frames_dir / name).read_bytes() == (resumed.frames_dir / name).read_bytes()
    manifest = (resumed.frames_dir / "manifest.json").read_text()
    assert '"color_coherence": "lab"' in manifest


def test_an_unknown_colour_coherence_is_a_storyboard_error(tmp_path, capsys):
    from test_storyboard_errors import assert_error

    text = "title: t\nrender:\n  color_coherence: hsv\nkeyframes:\n  - at: 1s\n    prompt: a\n"
    assert_error(tmp_path, capsys, text, 3, "render.color_coherence", "'hsv' is not one of off")
    board = tmp_path / "off.yaml"
    board.write_text(text.replace("hsv", "off"))  # YAML's bare `off` (false) is understood
    assert run.load(board).board.render.color_coherence == "off"
