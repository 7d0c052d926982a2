"""Several CLIPs at once (`models.clip` as a list or NAME: WEIGHT): written three ways and
checked like every other key; the loss is the weighted sum of each CLIP's own loss on its own
cutouts at its own resolution; each prompt is embedded once per CLIP; a render records them
all, resumes only with the same ones, and `feverdream score` measures with them."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import shapes_checks as checks
import torch
from PIL import Image
from shape_reader import read_frame
from test_storyboard_errors import assert_error

from pipeline import run
from pipeline.cli import main
from pipeline.engine import Engine, frame_generator, render_frames
from pipeline.models.architectures import TINY_CLIP
from pipeline.models.clip import random_clip, save_clip_torchscript
from pipeline.settings import CLASSIC, EngineSettings
from pipeline.store import FrameStore
from pipeline.storyboard import load_storyboard

# As the red check of tests/test_shapes_engine.py asks of the first frame (all of seeds 0-4
# came out red with these three CLIPs, red 0.43-0.74 of the shape; with the shapes CLIP alone
# 0.36-0.75).
FIRST_STEPS, CUTS = checks.FIRST_STEPS, checks.FIRST_CUTS

BOARD = """\
title: two clips
duration: 4f
render:
  size: 144x256
  first_steps: 2
  cuts: 2
models:
  vqgan: tiny
  clip: {clip}
keyframes:
  - at: 0s
    prompt: "a red circle"
"""


@pytest.fixture
def small_clip():
    """A CLIP that sees 48 px cutouts (the others see 64): random, like `tiny`."""
    config = copy.deepcopy(TINY_CLIP)
    config["vision_cfg"].update(image_size=48, patch_size=16)
    return random_clip(config, seed=5)


def clips_of(tmp_path, clip: str) -> tuple[tuple[str, float], ...]:
    path = tmp_path / "board.yaml"
    path.write_text(BOARD.format(clip=clip))
    return load_storyboard(path).models.clips


def test_clip_is_one_name_a_list_or_names_with_weights(tmp_path):
    assert clips_of(tmp_path, "shapes") == (("shapes", 1.0),)
    assert clips_of(tmp_path, "[shapes, tiny]") == (("shapes", 1.0), ("tiny", 1.0))
    assert clips_of(tmp_path, "{shapes: 1, tiny: 0.25}") == (("shapes", 1.0), ("tiny", 0.25))
    # The same CLIP twice, with other weights (a list keeps both).
    assert clips_of(tmp_path, "[shapes, {shapes: 0.5}]") == (("shapes", 1.0), ("shapes", 0.5))
    # A registry name in another spelling, and a file beside the storyboard.
    save_clip_torchscript(random_clip(TINY_CLIP, seed=1), tmp_path / "mine.pt")
    assert clips_of(tmp_path, "[vit-b-32, mine.pt]") == (("vit-b-32", 1.0), ("mine.pt", 1.0))


@pytest.mark.parametrize(
    ("clip", "words"),
    [
        ("ViT-B/33", ["unknown CLIP model 'ViT-B/33'", "Did you mean ViT-B/32"]),
        ("[shapes, RN5O]", ["unknown CLIP model 'RN5O'", "RN50"]),
        ("models/mine.pt", ["models/mine.pt not found", "relative to the storyboard"]),
        ("[]", ["is empty"]),
        ("{tiny: 1, tiny: 2}", ["'tiny' is given twice"]),
        ("{shapes: 0}", ["models.clip['shapes']: ", "greater than 0", "remove it"]),
        ("{shapes: -1}", ["models.clip['shapes']: ", "greater than 0"]),
        ("{shapes: lots}", ["models.clip['shapes']: ", "expected a number"]),
        ("[[shapes]]", ["expected a CLIP's name"]),
        ("3", ["expected text"]),
    ],
)
def test_a_clip_that_cannot_be_used_is_a_file_line_error(tmp_path, capsys, clip, words):
    key = "models.clip['shapes']" if "shapes: " in clip else "models.clip"
    assert_error(tmp_path, capsys, BOARD.format(clip=clip), 9, key, *words)


def test_an_unknown_vqgan_is_a_file_line_error_too(tmp_path, capsys):
    text = BOARD.format(clip="tiny").replace("vqgan: tiny", "vqgan: imagenet_f16_16384")
    assert_error(
        tmp_path, capsys, text, 8, "models.vqgan", "vqgan_imagenet_f16_16384", "models list"
    )


def test_render_refuses_an_unknown_clip_before_loading_anything(tmp_path, capsys):
    (tmp_path / "board.yaml").write_text(BOARD.format(clip="[tiny, ViT-B/3]"))
    code = main(["render", str(tmp_path / "board.yaml"), "-o", str(tmp_path / "out")])
    assert code == 2
    assert "board.yaml:9: models.clip: unknown CLIP model 'ViT-B/3'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_loss_is_each_clips_own_loss_on_its_own_cutouts_summed_by_weight(
    shapes_models, small_clip
):
    vqgan, shapes = shapes_models
    settings = EngineSettings(width=144, height=256, steps=1, first_steps=1, cuts=4, lr=0.1,
                              seed=0)  # fmt: skip
    prompts = (("a large blue square", 1.0), ("a small red circle", -0.5))
    both = Engine(vqgan, [(shapes, 1.0), (small_clip, 0.25)], settings)
    alone = [Engine(vqgan, clip, settings) for clip in (shapes, small_clip)]
    image = torch.rand(1, 3, 256, 144, generator=torch.Generator().manual_seed(3))

    cutouts = both.cutouts(image, frame_generator(0, 7))
    assert [tuple(c.shape[-2:]) for c in cutouts] == [(64, 64), (48, 48)]
    targets, weights = both.targets(prompts)
    together = both.clip_loss(cutouts, targets, weights)
    each = [
        engine.clip_loss([views], *engine.targets(prompts))
        for engine, views in zip(alone, cutouts, strict=True)
    ]
    assert float(together) == pytest.approx(float(each[0] + 0.25 * each[1]), rel=1e-6)
    # The second CLIP counts: without it the loss is another number.
    assert abs(float(together) - float(each[0])) > 1e-4


def test_two_clips_render_with_each_prompt_embedded_once_per_clip(
    shapes_models, small_clip, tmp_path, monkeypatch
):
    vqgan, shapes = shapes_models
    calls: dict[str, list[str]] = {"shapes": [], "small": []}
    for name, model in (("shapes", shapes), ("small", small_clip)):
        original = model.encode_text

        def counted(texts, original=original, name=name):
            calls[name].extend(texts)
            return original(texts)

        monkeypatch.setattr(model, "encode_text", counted)
    keyframes = f"""\
        - at: 0s
          prompt: "{checks.CAMERA_PROMPT}"
        - at: 3f
          prompt: "a small yellow circle"
        """
    text = checks.storyboard(0, "6f", keyframes, first_steps=FIRST_STEPS, cuts=CUTS)
    (tmp_path / "board.yaml").write_text(text)
    plan = run.load(tmp_path / "board.yaml").plan
    # The shapes CLIP twice (its embeddings shared) and the small one, all in the loss.
    clips = [(shapes, 1.0), (shapes, 0.5), (small_clip, 0.2)]
    settings = EngineSettings(width=144, height=256, steps=2, first_steps=FIRST_STEPS,
                              cuts=CUTS, lr=0.1, seed=0, speed=CLASSIC)  # fmt: skip
    result = render_frames(plan, Engine(vqgan, clips, settings), FrameStore(tmp_path / "out"))

    assert result.frames_done == 6
    texts = sorted([checks.CAMERA_PROMPT, "a small yellow circle"])
    assert sorted(calls["shapes"]) == texts, calls
    assert sorted(calls["small"]) == texts, calls
    # And the shapes CLIP still steers: the first frame is the red it was asked for.
    pixels = Image.open(FrameStore(tmp_path / "out").frame_path(0)).convert("RGB")
    first = read_frame(np.asarray(pixels))
    assert first.colour == "red", first


def test_a_render_records_its_clips_resumes_with_them_and_scores_with_them(tmp_path, capsys):
    save_clip_torchscript(random_clip(TINY_CLIP, seed=1), tmp_path / "other.pt")
    board = tmp_path / "board.yaml"
    board.write_text(BOARD.format(clip="{tiny: 1, other.pt: 0.5}"))
    options = run.RenderOptions(output=tmp_path / "out", encode=False, device="cpu")
    rendered = run.render(board, options)
    assert rendered.frames_done == 4
    recorded = json.loads((tmp_path / "out" / "frames" / "manifest.json").read_text())
    clips = recorded["settings"]["models"]["clip"]
    assert [(c["name"], c["weight"]) for c in clips] == [
        ("tiny", 1.0),
        (str(tmp_path / "other.pt"), 0.5),
    ]
    assert all(len(c["sha256"]) == 64 for c in clips)

    # Another weight is another render: it is not continued as if nothing had changed.
    board.write_text(BOARD.format(clip="{tiny: 1, other.pt: 0.25}"))
    assert main(["render", str(board), "-o", str(tmp_path / "out")]) != 0
    assert "models" in capsys.readouterr().err

    # The score's CLIP loss is the render's: both CLIPs, by their weights.
    board.write_text(BOARD.format(clip="{tiny: 1, other.pt: 0.5}"))
    scored = run.score(tmp_path / "out")
    alone = run.score(tmp_path / "out", clip="tiny")
    assert scored.clip_loss is not None and alone.clip_loss is not None
    assert scored.clip_loss.mean != pytest.approx(alone.clip_loss.mean, rel=1e-3)
