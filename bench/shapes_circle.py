"""How close the engine gets to "a large red circle on a black background" with the shapes
models: the red-circle check of tests/test_shapes_engine.py for ten seeds, read by the
tests' pixel reader (colour and form of each last frame), and CLIP's energy (the engine's
loss over 64 cutouts: all, the 16 whole-frame views, the 48 crops) of the drawn circle, of
its VQGAN reconstruction and of the engine's frames, and what CLIP itself takes the forms of
the drawings and of the frames for (its zero-shot reading). With `--from-drawn` the engine starts
from the drawn shape instead, and the reading after every 20 steps shows whether the circle
stays a circle under optimisation (is it what CLIP likes best nearby?). With `--shape square`
or `triangle` the prompt and the drawing are that shape instead, which shows whether the
prompt's shape steers the form at all; `--frames` and `--steps` render more frames after the
first (each re-encoded from the last, as a render does) and read the last.

    .venv/bin/python bench/shapes_circle.py [--models DIR] [--first 100 --cuts 16]
        [--engine classic|fast] [--codebook-std 0.6] [--from-drawn] [--sheet out.png]
        [--shape circle|square|triangle] [--frames 3 --steps 2]

Figures and what they meant: bench/RESULTS.md, "The shapes world on an AVX-512 machine".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
from shape_reader import read_frame  # noqa: E402

from pipeline.engine import Engine, frame_generator, render_frames  # noqa: E402
from pipeline.guidance import make_cutouts, spherical_distance  # noqa: E402
from pipeline.models.files import packaged_dir  # noqa: E402
from pipeline.models.loading import load_models  # noqa: E402
from pipeline.pictures import to_uint8  # noqa: E402
from pipeline.run import load as load_story  # noqa: E402
from pipeline.settings import CLASSIC, EngineSettings, Speed  # noqa: E402
from pipeline.store import FrameStore  # noqa: E402
from tools.shapes.build import shapes_files  # noqa: E402
from tools.shapes.train import _scale_codebook  # noqa: E402
from tools.shapes.world import SHAPES, Scene, draw  # noqa: E402


def prompt(shape: str) -> str:
    return f"a large red {shape} on a black background"


def drawing(shape: str) -> Scene:
    return Scene("black", shape, "red", "large", "centre", 0.5, 0.5, 0.36, 0.0)


def energy(clip, image: torch.Tensor, text: torch.Tensor) -> tuple[float, float, float]:
    views = make_cutouts(image, 64, clip.input_resolution, torch.Generator().manual_seed(0))
    with torch.no_grad():
        distance = spherical_distance(clip.encode_image(views), text)[:, 0]
    return float(distance.mean()), float(distance[:16].mean()), float(distance[16:].mean())


def shape_reading(clip, image: torch.Tensor, words: torch.Tensor) -> list[float]:
    """CLIP's own zero-shot reading of the form: softmax over the embeddings `words` of "a
    circle", "a square" and "a triangle" at CLIP's logit scale, averaged over 32 cutouts."""
    views = make_cutouts(image, 32, clip.input_resolution, torch.Generator().manual_seed(0))
    with torch.no_grad():
        seen = torch.nn.functional.normalize(clip.encode_image(views), dim=-1)
        logits = clip.model.logit_scale.exp() * seen @ words.T
    return [float(p) for p in logits.softmax(dim=-1).mean(dim=0)]


def render_seed(models, folder: Path, seed: int, args, options: Speed) -> np.ndarray:
    board = textwrap.dedent(
        f"""\
        title: circle
        seed: {seed}
        fps: 24
        size: 360x640
        duration: {args.frames}f
        render: {{size: 144x256, steps: {args.steps}, first_steps: {args.first}, cuts: {args.cuts}}}
        models: {{vqgan: shapes, clip: shapes}}
        keyframes:
          - {{at: 0s, prompt: "{prompt(args.shape)}"}}
        """
    )
    path = folder / "board.yaml"
    path.write_text(board)
    storyboard, _, plan = load_story(str(path))
    engine = Engine(*models, EngineSettings.for_render(storyboard.render, seed, speed=options))
    store = FrameStore(folder / "out")
    render_frames(plan, engine, store)
    return np.asarray(Image.open(store.frame_path(plan.n_frames - 1)).convert("RGB"))


def from_drawn(models, args) -> list[np.ndarray]:
    vqgan, clip = models
    settings = EngineSettings(144, 256, 2, args.first, args.cuts, 0.1, 0)
    engine = Engine(vqgan, clip, settings)
    start = engine.image_to_latent(draw([drawing(args.shape)], 144, 256))
    frames = []
    for seed in range(3):
        z, generator = start.clone(), frame_generator(seed, 0)
        for block in range(4):
            z, loss, _ = engine.optimise(z, ((prompt(args.shape), 1.0),), 20, generator)
            with torch.no_grad():
                frames.append(to_uint8(engine.latent_to_image(z)))
            reading = read_frame(frames[-1])
            print(f"seed {seed} step {20 * (block + 1)}: loss {loss:.3f}, {reading.form}")
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", type=Path, default=packaged_dir(), help="default: the reference build"
    )
    parser.add_argument("--first", type=int, default=100, help="steps of the first frame")
    parser.add_argument("--cuts", type=int, default=16)
    parser.add_argument("--shape", choices=SHAPES, default="circle")
    parser.add_argument("--frames", type=int, default=3, help="frames rendered; the last is read")
    parser.add_argument("--steps", type=int, default=2, help="steps of each frame after the first")
    parser.add_argument("--engine", choices=("classic", "fast"), default="classic")
    parser.add_argument("--from-drawn", action="store_true")
    parser.add_argument("--sheet", type=Path, help="write the frames side by side here")
    parser.add_argument(
        "--codebook-std", type=float, help="rescale the VQGAN's latent space to this spread first"
    )
    args = parser.parse_args()
    files = shapes_files(args.models)
    models = load_models(str(files.vqgan_ckpt), str(files.clip), "cpu")
    vqgan, clip = models
    if args.codebook_std:
        _scale_codebook(vqgan, args.codebook_std)
    if args.from_drawn:
        frames = from_drawn(models, args)
    else:
        options = CLASSIC if args.engine == "classic" else Speed.fast("cpu", 2)
        frames = []
        with tempfile.TemporaryDirectory() as scratch:
            for seed in range(10):
                folder = Path(scratch) / f"seed{seed}"
                folder.mkdir()
                frames.append(render_seed(models, folder, seed, args, options))
                reading = read_frame(frames[-1])
                fits = {form: round(fit, 2) for form, fit in reading.fits.items()}
                print(f"seed {seed}: {reading.colour} {reading.form} {fits}")
        readings = [read_frame(frame) for frame in frames]
        red = sum(r.colour == "red" for r in readings)
        forms = {form: sum(r.form == form for r in readings) for form in SHAPES}
        right = sum(r.colour == "red" and r.form == args.shape for r in readings)
        print(f"red {red}/10, red and {args.shape} {right}/10; read as {forms}")
        text = clip.encode_text([prompt(args.shape)])
        drawn = draw([drawing(args.shape)], 144, 256)
        with torch.no_grad():
            rebuilt = vqgan.decode(vqgan.quantize_st(vqgan.encode(drawn * 2 - 1)))
        rebuilt = rebuilt.add(1).div(2).clamp(0, 1)
        as_images = [torch.tensor(f).permute(2, 0, 1)[None].float() / 255 for f in frames]
        made = np.mean([energy(clip, image, text) for image in as_images], axis=0)
        print("energy (all, whole views, crops):")
        print(f"  drawn {args.shape:9}", *(f"{v:.3f}" for v in energy(clip, drawn, text)))
        print("  its VQGAN copy ", *(f"{v:.3f}" for v in energy(clip, rebuilt, text)))
        print("  engine frames  ", *(f"{v:.3f}" for v in made))
        words = clip.encode_text([f"a {shape}" for shape in SHAPES])
        said = np.mean([shape_reading(clip, image, words) for image in as_images], axis=0)
        print(f"CLIP's own reading of the form ({', '.join(SHAPES)}):")
        for shape in SHAPES:
            read = shape_reading(clip, draw([drawing(shape)], 144, 256), words)
            print(f"  drawn {shape:9}", *(f"{p:.2f}" for p in read))
        print("  engine frames  ", *(f"{p:.2f}" for p in said))
    if args.sheet:
        Image.fromarray(np.concatenate(frames, axis=1)).save(args.sheet)


if __name__ == "__main__":
    main()
