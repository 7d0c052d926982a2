"""How the engine computes a step (issue 26): the lean decoder pass, checkpointing, cutouts in
batches, channels_last and torch.compile each give the step the classic execution gives (up
to the last bits of a float), keep less for the backward where they say they do, and are
chosen from the device's free memory; a render continues under another execution."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from pipeline import memory, run
from pipeline.engine import Engine, EngineSettings, Execution, frame_generator
from pipeline.models.registry import load_models

PROMPTS = (("a red circle", 1.0), ("a blue square", -0.5))


@pytest.fixture(scope="module")
def tiny_models(_tiny_model_files):
    return load_models(str(_tiny_model_files.vqgan_ckpt), str(_tiny_model_files.clip), "cpu")


def engine_for(models, execution: Execution, **overrides) -> Engine:
    vqgan, clip = models
    values = dict(width=144, height=256, steps=3, first_steps=3, cuts=8, lr=0.1, seed=3)
    values.update(overrides)
    return Engine(vqgan, clip, EngineSettings(**values, execution=execution))


def optimised(engine: Engine, steps: int = 3):
    z = engine.random_latent(frame_generator(3, 0))
    return engine.optimise(z, PROMPTS, steps, frame_generator(3, 1))


def gradient(engine: Engine, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.clone().requires_grad_(True)
    image = engine.latent_to_image(z)
    (image * torch.linspace(-1, 1, image.numel()).view_as(image)).sum().backward()
    return image.detach(), z.grad


def test_the_lean_decoder_is_tamings_decoder_keeping_a_quarter(tiny_models):
    classic = engine_for(tiny_models, Execution())
    lean = engine_for(tiny_models, Execution(lean_decoder=True))
    checkpointed = engine_for(tiny_models, Execution(lean_decoder=True, checkpoint=True))
    z = classic.random_latent(frame_generator(3, 0))

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


def test_the_lean_decoder_under_bf16_autocast_is_tamings(tiny_models):
    """The VQGAN's bf16 choice (Speed.bf16: autocast around it) through the lean pass: the
    convolutions' own backward sees bf16 gradients and fp32 weights."""
    from pipeline.engine import Speed

    bf16 = Speed(bf16=True)
    classic = engine_for(tiny_models, Execution(), speed=bf16)
    lean = engine_for(tiny_models, Execution(lean_decoder=True), speed=bf16)
    z = classic.random_latent(frame_generator(3, 0))
    (image, grad), (lean_image, lean_grad) = gradient(classic, z), gradient(lean, z)
    assert lean_grad.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: the two passes round at different places.
    assert (lean_image - image).abs().mean() < 0.01
    assert (lean_grad - grad).norm() < 0.05 * grad.norm()


def test_cutouts_in_batches_take_the_same_step(tiny_models):
    whole = optimised(engine_for(tiny_models, Execution()))
    for batch in (1, 3):
        batched = optimised(engine_for(tiny_models, Execution(cut_batch=batch)))
        assert batched.loss == pytest.approx(whole.loss, rel=1e-4)
        torch.testing.assert_close(batched.z, whole.z, rtol=1e-4, atol=1e-5)


def test_two_clips_and_a_start_picture_in_batches(tiny_models):
    """Each CLIP's cutouts are batched on their own; the pull toward a start picture still
    counts once."""
    from pipeline.engine import Pull

    vqgan, clip = tiny_models
    results = []
    for execution in (Execution(), Execution(cut_batch=3)):
        engine = Engine(vqgan, ((clip, 1.0), (clip, 0.5)), EngineSettings(
            144, 256, 3, 3, 8, 0.1, 3, execution=execution))  # fmt: skip
        z = engine.random_latent(frame_generator(3, 0))
        pull = Pull(z.clone(), 2.0)
        results.append(engine.optimise(z + 0.05, PROMPTS, 3, frame_generator(3, 1), pull=pull))
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


def test_the_compiled_decoder_takes_the_same_step(tiny_models):
    """torch.compile's path (inductor, on this CPU) through the lean decoder."""
    small = dict(width=64, height=128)
    plain = optimised(engine_for(tiny_models, Execution(lean_decoder=True), **small), 2)
    compiled = optimised(
        engine_for(tiny_models, Execution(lean_decoder=True, compile=True), **small), 2
    )
    torch.testing.assert_close(compiled.z, plain.z, rtol=1e-3, atol=1e-4)


def test_the_memory_a_step_needs_grows_with_the_canvas(tiny_models):
    small = memory.step_need(engine_for(tiny_models, Execution(lean_decoder=True)))
    large = memory.step_need(
        engine_for(tiny_models, Execution(lean_decoder=True), width=288, height=512)
    )
    assert 3.5 < large.decoder / small.decoder < 4.5  # four times the pixels
    assert large.clip_per_cut == small.clip_per_cut


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
    assert run.compile_pays("cpu", 10**6) == (False, pytest.approx(run.compile_pays("cpu", 1)[1]))
    assert not run.compile_pays("cuda", run.COMPILE_MIN_STEPS - 1)[0]
    assert run.compile_pays("cuda", run.COMPILE_MIN_STEPS)[0]


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
  cuts: 4
  cadence: 2
keyframes:
  - at: 0s
    prompt: "a red circle"
    zoom: 1.05
"""


def test_a_render_continues_under_another_execution(tmp_path, tiny_model_dir, caplog):
    """The execution is how, not what: the manifest leaves it out and a stopped render
    continues under another one (a GPU with less free memory, say); the render logs its
    choices."""
    board = tmp_path / "board.yaml"
    board.write_text(BOARD)
    story = run.load(board)
    base = run.RenderOptions(output=tmp_path / "out", vqgan="tiny", clip="tiny", encode=False)
    asked = iter([False, True])
    with caplog.at_level("INFO"):
        first = run.render(story, base, should_stop=lambda: next(asked, True))
    assert first.stopped and 0 < first.frames_done < 8
    assert "torch.compile off" in caplog.text and "a step needs about" in caplog.text
    manifest = json.loads((first.frames_dir / "manifest.json").read_text())
    assert not any("execution" in key or "cut_batch" in key for key in manifest["settings"])

    other = Execution(lean_decoder=True, checkpoint=True, cut_batch=1)
    second = run.render(story, replace(base, execution=other))
    assert not second.stopped and second.frames_done == 8
