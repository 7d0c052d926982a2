"""How the engine computes a step (issue 26): the lean decoder pass, checkpointing, cutouts in
batches, channels_last and torch.compile each give the step the classic execution gives (up
to the last bits of a float), keep less for the backward where they say they do, and are
chosen from the device's free memory; a render goes on under the execution it began with."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from pipeline import memory, rendering, run
from pipeline.engine import Engine, frame_generator
from pipeline.models.loading import load_models
from pipeline.settings import EngineSettings, Execution
from pipeline.store import RenderChangedError

PROMPTS = (("a red circle", 1.0), ("a blue square", -0.5))


@pytest.fixture(scope="module")
def tiny_models(_tiny_model_files, device):
    """The tiny models on the device under test (cpu in `make test`; the tests marked
    `device` are the GPU's share of bench/gpu_proof.py)."""
    return load_models(str(_tiny_model_files.vqgan_ckpt), str(_tiny_model_files.clip), device)


def engine_for(models, execution: Execution, **overrides) -> Engine:
    vqgan, clip = models
    device = vqgan.codebook.device.type
    values = dict(width=144, height=256, steps=3, first_steps=3, cuts=8, lr=0.1, seed=3)
    values.update(overrides)
    return Engine(vqgan, clip, EngineSettings(**values, device=device, execution=execution))


def optimised(engine: Engine, steps: int = 3):
    z = engine.random_latent(frame_generator(3, 0, engine.device))
    return engine.optimise(z, PROMPTS, steps, frame_generator(3, 1, engine.device))


def gradient(engine: Engine, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.clone().requires_grad_(True)
    image = engine.latent_to_image(z)
    weights = torch.linspace(-1, 1, image.numel(), device=image.device).view_as(image)
    (image * weights).sum().backward()
    return image.detach(), z.grad


@pytest.mark.device
def test_the_lean_decoder_is_tamings_decoder_keeping_a_quarter(tiny_models):
    classic = engine_for(tiny_models, Execution())
    lean = engine_for(tiny_models, Execution(lean_decoder=True))
    checkpointed = engine_for(tiny_models, Execution(lean_decoder=True, checkpoint=True))
    z = classic.random_latent(frame_generator(3, 0, classic.device))

    image, grad = gradient(classic, z)
    for engine in (lean, checkpointed):
        other_image, other_grad = gradient(engine, z)
        torch.testing.assert_close(other_image, image, rtol=1e-5, atol=1e-5)
        # A float's last bits, summed over the backward: within 1e-4 of the gradient's size.
        assert (other_grad - grad).norm() < 1e-4 * grad.norm()
    # Checkpointing runs the same blocks again: the very same gradient.
    assert torch.equal(gradient(checkpointed, z)[1], gradient(lean, z)[1])

    needs = {name: memory.step_need(e) for name, e in [("classic", classic), ("lean", lean)]}
    # A quarter of what taming's forward keeps (at 288x512 on the full-size VQGAN too).
    assert needs["lean"].decoder < 0.3 * needs["classic"].decoder
    assert needs["lean"].checkpointed < 0.7 * needs["lean"].decoder


@pytest.mark.device
def test_the_lean_decoder_under_bf16_autocast_is_tamings(tiny_models):
    """The VQGAN's bf16 choice (Speed.bf16: autocast around it) through the lean pass: the
    convolutions' own backward sees bf16 gradients and fp32 weights."""
    from pipeline.settings import Speed

    bf16 = Speed(bf16=True)
    classic = engine_for(tiny_models, Execution(), speed=bf16)
    lean = engine_for(tiny_models, Execution(lean_decoder=True), speed=bf16)
    z = classic.random_latent(frame_generator(3, 0, classic.device))
    (image, grad), (lean_image, lean_grad) = gradient(classic, z), gradient(lean, z)
    assert lean_grad.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: the two passes round at different places.
    assert (lean_image - image).abs().mean() < 0.01
    assert (lean_grad - grad).norm() < 0.05 * grad.norm()


@pytest.mark.device
def test_cutouts_in_batches_take_the_same_step(tiny_models):
    whole = optimised(engine_for(tiny_models, Execution()))
    for batch in (1, 3):
        batched = optimised(engine_for(tiny_models, Execution(cut_batch=batch)))
        assert batched.loss == pytest.approx(whole.loss, rel=1e-4)
        torch.testing.assert_close(batched.z, whole.z, rtol=1e-4, atol=1e-5)


@pytest.mark.device
def test_two_clips_and_a_start_picture_in_batches(tiny_models):
    """Each CLIP's cutouts are batched on their own; the pull toward a start picture still
    counts once."""
    from pipeline.engine import Pull

    vqgan, clip = tiny_models
    results = []
    for execution in (Execution(), Execution(cut_batch=3)):
        settings = EngineSettings(144, 256, 3, 3, 8, 0.1, 3, vqgan.codebook.device.type,
                                  execution=execution)  # fmt: skip
        engine = Engine(vqgan, ((clip, 1.0), (clip, 0.5)), settings)
        z = engine.random_latent(frame_generator(3, 0, engine.device))
        pull = Pull(z.clone(), 2.0)
        results.append(
            engine.optimise(z + 0.05, PROMPTS, 3, frame_generator(3, 1, engine.device), pull=pull)
        )
    assert results[1].loss == pytest.approx(results[0].loss, rel=1e-4)
    torch.testing.assert_close(results[1].z, results[0].z, rtol=1e-4, atol=1e-5)


def test_channels_last_takes_the_same_step(tiny_models):
    plain = optimised(engine_for(tiny_models, Execution(lean_decoder=True)))
    engine = engine_for(tiny_models, Execution(lean_decoder=True, channels_last=True))
    nhwc = optimised(engine)
    assert engine.vqgan.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(nhwc.z, plain.z, rtol=1e-3, atol=1e-4)
    # An engine of the classic execution lays the same models back out.
    engine_for(tiny_models, Execution())
    assert engine.vqgan.decoder.conv_in.weight.is_contiguous()


@pytest.mark.device
def test_the_compiled_decoder_takes_the_same_step(tiny_models):
    """torch.compile's path (inductor, on this CPU) through the lean decoder."""
    small = dict(width=64, height=128)
    plain = optimised(engine_for(tiny_models, Execution(lean_decoder=True), **small), 2)
    compiled = optimised(
        engine_for(tiny_models, Execution(lean_decoder=True, compile=True), **small), 2
    )
    torch.testing.assert_close(compiled.z, plain.z, rtol=1e-3, atol=1e-4)


@pytest.mark.device
def test_the_memory_a_step_needs_grows_with_the_canvas(tiny_models):
    small = memory.step_need(engine_for(tiny_models, Execution(lean_decoder=True)))
    large = memory.step_need(
        engine_for(tiny_models, Execution(lean_decoder=True), width=288, height=512)
    )
    assert 3.5 < large.decoder / small.decoder < 4.5  # four times the pixels
    assert large.clip_per_cut == small.clip_per_cut


@pytest.mark.device
def test_the_execution_is_fitted_to_the_free_memory(tiny_models):
    engine = engine_for(tiny_models, Execution(lean_decoder=True), cuts=16)
    need = memory.step_need(engine)
    plenty = memory.fit(engine, free=100 * 2**30)
    assert plenty.fits and plenty.execution == engine.execution

    # Just too little for every cutout at once: the cutouts go in batches first.
    whole = need.total(engine.execution, 16)
    batched = memory.fit(engine, free=int(whole / memory.HEADROOM) - 1)
    assert batched.fits and 4 <= batched.execution.cut_batch < 16
    assert not batched.execution.checkpoint

    # Too little even for four at a time: the decoder is checkpointed too.
    four = need.total(replace(engine.execution, cut_batch=4), 16)
    checkpointed = memory.fit(engine, free=int(four / memory.HEADROOM) - 1)
    assert checkpointed.fits and checkpointed.execution.checkpoint
    assert checkpointed.need < four

    # Nothing fits: the leanest, said so.
    hopeless = memory.fit(engine, free=1)
    assert not hopeless.fits
    assert hopeless.execution.checkpoint and hopeless.execution.cut_batch == 1
    assert "smaller canvas" in hopeless.describe()

    # The chosen engine really runs.
    fitted = Engine(engine.vqgan, engine.guides[0].model,
                    replace(engine.settings, execution=checkpointed.execution))  # fmt: skip
    assert optimised(fitted, 1).loss is not None


def test_compile_is_chosen_by_the_render_length_and_never_on_a_cpu():
    never = rendering.compile_pays("cpu", 1)[1]
    assert rendering.compile_pays("cpu", 10**6) == (False, pytest.approx(never))
    assert not rendering.compile_pays("cuda", rendering.COMPILE_MIN_STEPS - 1)[0]
    assert rendering.compile_pays("cuda", rendering.COMPILE_MIN_STEPS)[0]


BOARD = """\
title: execution test
seed: 7
fps: 24
size: 360x640
duration: 8f
render:
  size: 144x256
  steps: 2
  first_steps: 3
  cuts: 8
  cadence: 2
keyframes:
  - at: 0s
    prompt: "a red circle"
    zoom: 1.05
"""


def frames(folder) -> list[bytes]:
    return [path.read_bytes() for path in sorted((folder / "frames").glob("*.png"))]


def stop_after(anchors: int):
    """A should_stop that says yes after this many optimised frames."""
    asked = iter([False] * (anchors - 1))
    return lambda: next(asked, True)


def test_a_render_goes_on_under_the_execution_it_began_with(tmp_path, tiny_model_dir, caplog):
    """The execution a render fitted to its memory is recorded in its manifest and kept when
    it goes on, whatever is free then, so its frames are an uninterrupted render's; where it
    no longer fits, the render is refused and says what to do (issue 35)."""
    board = tmp_path / "board.yaml"
    board.write_text(BOARD)
    story = run.load(board)
    base = run.RenderOptions(vqgan="tiny", clip="tiny", encode=False)
    engine, _ = rendering.make_engine(story, base, "cpu", run.load_models(story, base, "cpu"))
    whole = memory.fits(engine, free=2**40).need  # every cutout through CLIP at once
    tight = int(whole / memory.HEADROOM) - 1  # just too little for that

    # Begun with too little memory for every cutout at once, it takes them in batches and
    # records that ...
    small = replace(base, output=tmp_path / "small", memory=tight)
    with caplog.at_level("INFO"):
        first = run.render(story, small, should_stop=stop_after(2))
    assert first.stopped and 0 < first.frames_done < 8
    assert "torch.compile off" in caplog.text and "a step needs about" in caplog.text
    recorded = json.loads((first.frames_dir / "manifest.json").read_text())["settings"]
    assert recorded["execution"]["cut_batch"] == 4 and not recorded["execution"]["checkpoint"]
    # ... and goes on under it when plenty is free: the frames an uninterrupted render makes.
    second = run.render(story, replace(small, memory=None))
    assert not second.stopped and second.frames_done == 8
    manifest = json.loads((second.frames_dir / "manifest.json").read_text())["settings"]
    assert manifest["execution"] == recorded["execution"]
    run.render(story, replace(small, output=tmp_path / "small-alone"))
    assert frames(tmp_path / "small") == frames(tmp_path / "small-alone")

    # Begun with plenty, then offered too little for its execution, where a fresh start would
    # fit: refused, saying why on one line and what to do on the next, frames untouched.
    big = replace(base, output=tmp_path / "big")
    run.render(story, big, should_stop=stop_after(1))
    before = frames(tmp_path / "big")
    with pytest.raises(RenderChangedError) as refused:
        run.render(story, replace(big, memory=tight))
    why, advice = str(refused.value).splitlines()
    assert "began with lean decoder" in why and "is allowed (--memory)" in why
    assert "--fresh" in advice and "cutouts 4 at a time" in advice
    assert frames(tmp_path / "big") == before
    # Less memory that still holds it: it goes on to the uninterrupted render's frames.
    run.render(story, replace(big, memory=int(whole / memory.HEADROOM) + 1))
    run.render(story, replace(big, output=tmp_path / "big-alone"))
    assert frames(tmp_path / "big") == frames(tmp_path / "big-alone")
    # Every frame made: nothing is refused for want of memory (only a video may be left).
    assert run.render(story, replace(big, memory=tight)).frames_done == 8

    # Begun where nothing fits (the leanest execution, with a warning): it goes on, with
    # a warning again, rather than being sent to --fresh to choose the same.
    starved = replace(base, output=tmp_path / "starved", memory=2**20)
    run.render(story, starved, should_stop=stop_after(1))
    caplog.clear()
    with caplog.at_level("INFO"):
        assert run.render(story, starved).frames_done == 8
    assert "no other execution would fit either" in caplog.text

    # Another execution asked for by name (the classic loop's): refused, saying what differs.
    with pytest.raises(RenderChangedError, match="execution.lean_decoder: True → False"):
        run.render(story, replace(big, execution=Execution()))

    # A render from before executions were recorded goes on under the one fitted now.
    old = replace(base, output=tmp_path / "old")
    run.render(story, old, should_stop=stop_after(1))
    path = tmp_path / "old" / "frames" / "manifest.json"
    data = json.loads(path.read_text())
    del data["settings"]["execution"]
    path.write_text(json.dumps(data))
    assert run.render(story, old).frames_done == 8
    assert frames(tmp_path / "old") == frames(tmp_path / "big-alone")
