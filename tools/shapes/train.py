"""Trains the shapes world's VQGAN and CLIP on the CPU, seeded and deterministic.

The models are the classes the engine loads for the real ones: a taming VQGAN (Encoder,
Decoder, VectorQuantizer2; f8, a small codebook) trained to reconstruct drawn canvases, and an
open_clip CLIP (a small ResNet image tower, like RN50's, and a small text transformer on
CLIP's own tokenizer) trained contrastively on captioned scenes. CLIP learns from exactly the
views the engine will show it, `make_cutouts` of a 9:16 canvas, so that its gradient through
the engine's cutouts means what the prompt says.

CLIP then has a second stage (`harden_clip`), once the VQGAN is trained: the engine itself
optimises frames through that VQGAN towards captions, and CLIP learns that each of those
frames must cost more for its caption than the drawn scene the caption describes. Trained on
drawings alone, CLIP preferred the engine's clutter of coloured blobs to any drawn shape.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import open_clip
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline.engine import Engine
from pipeline.guidance import make_cutouts, spherical_distance
from pipeline.models.architectures import SHAPES_CLIP, SHAPES_VQGAN
from pipeline.models.clip import CLIP_MEAN, CLIP_STD, CLIPModel, build_clip
from pipeline.models.vqgan import VQGAN
from pipeline.settings import EngineSettings
from tools.shapes import world
from tools.shapes.world import (
    Description,
    Scene,
    attribute_descriptions,
    coverage,
    paint,
    random_description,
    random_scene,
    rgb,
    vocabulary,
)

log = logging.getLogger(__name__)

# The canvas the engine renders the tests and the demo on; CLIP's views are cut from it.
CANVAS = (144, 256)


@dataclass(frozen=True)
class VQGANTraining:
    steps: int = 2000
    batch: int = 2
    lr: float = 2e-3
    seed: int = 7
    threads: int = 1
    # The codebook is scaled to this spread per dimension after training (the decoded images
    # stay the same): wide enough that a fresh Adam's first steps at lr 0.1, which move every
    # latent by about the lr, do not repaint a frame (at 0.3 the classic loop's two steps a
    # frame turned 2 of 10 red first frames blue by the third frame; at 0.6 none, and the
    # first frame still comes out red within 100 steps: bench/RESULTS.md).
    codebook_std: float = 0.6


@dataclass(frozen=True)
class CLIPTraining:
    steps: int = 800
    scenes: int = 64  # scenes per batch
    views: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 11
    threads: int = 1
    # The share of canvases partly hidden under clutter, and the most of one that is hidden.
    clutter: float = 0.3
    clutter_max: float = 0.8
    # The image tower first learns the attributes from the probe alone for this many steps,
    # with shape weighing `shape_weight` times the others, then everything trains together.
    probe_steps: int = 150
    shape_weight: float = 4.0
    probe_weight: float = 1.0
    # A view shows the shape when more than this share of it is the shape's pixels.
    visible: float = 0.1


@dataclass(frozen=True)
class CLIPHardening:
    """CLIP's second stage, against the engine's own frames (`harden_clip`)."""

    rounds: int = 250
    chains: int = 16  # frames being optimised at once, each towards its own caption
    advance: int = 4  # chains the engine moves on each round...
    chain_steps: int = 3  # ...by this many of its steps
    chain_age: int = 100  # steps after which a chain starts again from random codes
    cuts: int = 8  # the engine's cutouts for a chain's steps
    judge_cuts: int = 16  # cutouts that compare a chain's frame with its drawn scene
    engine_lr: float = 0.1
    scenes: int = 32  # scenes per batch of the first stage's loss, which goes on beside
    lr: float = 3e-4
    weight: float = 4.0  # of the frames-against-drawings loss, beside the first stage's
    tau: float = 0.05  # how sharply that loss tells a frame's energy from its drawing's
    seed: int = 13
    threads: int = 1


@contextlib.contextmanager
def _deterministic(seed: int, threads: int) -> Iterator[None]:
    """Seeded, deterministic kernels on a fixed number of threads, restored afterwards."""
    before = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(was_deterministic)


def _cosine(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


# --- VQGAN ---------------------------------------------------------------------------------


def _vqgan_batch(rng: random.Random, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole canvases with one to three shapes each, in [-1, 1], and how much of each pixel
    the shapes cover.

    More than one shape, overlapping at times, so the decoder learns edges between any two
    colours of the world, as an optimised frame may have them. Whole canvases, not crops:
    taming's GroupNorms see the whole image, so the model must learn at the engine's size.
    """
    width, height = CANVAS
    images, covers = [], []
    for _ in range(count):
        layers = [random_scene(rng) for _ in range(rng.randint(1, 3))]
        covered = coverage(layers[:1], width, height)
        canvas = paint(layers[:1], covered)
        for scene in layers[1:]:
            alpha = coverage([scene], width, height)
            colour = torch.tensor(rgb(world.PALETTE[scene.colour])).view(1, 3, 1, 1)
            canvas = canvas + alpha * (colour - canvas)
            covered = torch.maximum(covered, alpha)
        images.append(canvas)
        covers.append(covered)
    return torch.cat(images) * 2 - 1, torch.cat(covers)


def _restart_dead_codes(model: VQGAN, used: torch.Tensor, latents: torch.Tensor) -> None:
    """Move the codes no latent picked since the last restart onto latents of this batch,
    chosen in proportion to how far they are from their nearest code: the background is most
    of every canvas, and restarting onto latents at random would spend the codebook on it
    while the colours shared a few codes and came out as their average."""
    dead = (~used).nonzero().flatten()
    if len(dead) == 0:
        return
    vectors = latents.movedim(1, -1).reshape(-1, latents.shape[1])
    error = torch.cdist(vectors, model.codebook).min(dim=1).values
    picks = torch.multinomial(error + 1e-8, len(dead), replacement=True)
    with torch.no_grad():
        model.codebook[dead] = vectors[picks]


def _scale_codebook(model: VQGAN, std: float) -> None:
    """Rescale the latent space so the codebook has this spread; the decoded images do not
    change (quant_conv's output grows by the factor, post_quant_conv's weights shrink by it)."""
    with torch.no_grad():
        factor = std / float(model.codebook.std())
        model.codebook.mul_(factor)
        model.quant_conv.weight.mul_(factor)
        model.quant_conv.bias.mul_(factor)
        model.post_quant_conv.weight.div_(factor)


def train_vqgan(settings: VQGANTraining = VQGANTraining(), progress: bool = True) -> VQGAN:
    """A VQGAN trained to reconstruct the world's canvases (L1 + L2 and the VQ losses)."""
    with _deterministic(settings.seed, settings.threads):
        rng = random.Random(settings.seed)
        model = VQGAN(SHAPES_VQGAN).train()
        optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr, betas=(0.5, 0.9))
        used = torch.zeros(SHAPES_VQGAN.n_embed, dtype=torch.bool)
        bar = tqdm(range(settings.steps), desc="shapes VQGAN", disable=not progress, position=0)
        for step in bar:
            for group in optimiser.param_groups:
                group["lr"] = settings.lr * _cosine(step, settings.steps, 100)
            images, covered = _vqgan_batch(rng, settings.batch)
            latents = model.quant_conv(model.encoder(images))
            quantised, vq_loss, (_, _, codes) = model.quantize(latents)
            output = model.decoder(model.post_quant_conv(quantised))
            # The shapes are a small part of each canvas but what the colours are read from:
            # their pixels weigh four times the background's.
            weight = 1 + 3 * covered
            error = output - images
            recon = ((error.abs() + error.square()) * weight).mean() / weight.mean()
            loss = recon + vq_loss
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            used[codes] = True
            if step % 50 == 49 and step < settings.steps * 3 // 4:
                _restart_dead_codes(model, used, latents.detach())
                used[:] = False
            bar.set_postfix(l1=f"{recon.item():.4f}", vq=f"{vq_loss.item():.4f}")
        _scale_codebook(model, settings.codebook_std)
    return model.eval().requires_grad_(False)


# --- CLIP ----------------------------------------------------------------------------------


def _known_tokens() -> torch.Tensor:
    """The token ids the world's captions use, with the start and end tokens."""
    tokens = open_clip.tokenize(vocabulary())
    return tokens[tokens != 0].unique()


def _soft_cross_entropy(logits: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a target spread evenly over every matching column; rows that
    match nothing take no part (they are still the other rows' negatives)."""
    total = match.sum(dim=1, keepdim=True)
    rows = total[:, 0] > 0
    if not bool(rows.any()):
        return logits.sum() * 0
    target = match[rows] / total[rows]
    return -(target * logits[rows].log_softmax(dim=1)).sum(dim=1).mean()


def _clip_batch(
    rng: random.Random, generator: torch.Generator, settings: CLIPTraining, resolution: int
) -> tuple[torch.Tensor, list[Scene], torch.Tensor, torch.Tensor]:
    """`views` cutouts of each of `scenes` new scenes, the scene each view shows, how much of
    it is hidden under clutter (0 for a clean view), and whether the view shows the shape.

    The cutouts are the engine's own (make_cutouts). Many scenes with two views each (one
    whole frame, one crop) teach a small CLIP shapes and places far sooner than a few scenes
    with many views: those views' gradients mostly repeat each other.

    A crop can miss the shape. Such a view is background only and is not captioned as the
    scene: were it, every prompt's text would sit between its shape and a blank background,
    and what CLIP would like best is a frame of blobs that looks like both.
    """
    scenes: list[Scene] = [random_scene(rng) for _ in range(settings.scenes)]
    alpha = coverage(scenes, *CANVAS)
    canvases, hidden, mask = _cluttered(paint(scenes, alpha), rng, generator, settings)
    # The shape's uncovered pixels travel through the cutouts as a fourth channel.
    shown = alpha * (1 - mask)
    views, visible = [], []
    for canvas, alpha in zip(canvases, shown, strict=True):
        cut = make_cutouts(torch.cat([canvas, alpha])[None], settings.views, resolution, generator)
        views.append(cut[:, :3])
        visible.append(cut[:, 3].mean(dim=(1, 2)) > settings.visible)
    views_of = [scene for scene in scenes for _ in range(settings.views)]
    return (
        torch.cat(views),
        views_of,
        hidden.repeat_interleave(settings.views),
        torch.cat(visible),
    )


def _cluttered(
    canvases: torch.Tensor, rng: random.Random, generator: torch.Generator, settings: CLIPTraining
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Some canvases partly hidden under blobs of the world's colours, about the size of the
    blobs a decoded random latent shows (the engine's first frames); the share of each that
    is hidden, and where (N, 1, H, W).

    The captions still describe the scene underneath, but prefer its clean views (the loss's
    targets shrink with the clutter), so CLIP's gradient on a cluttered frame points both
    towards the prompt and away from the clutter.
    """
    count, _, height, width = canvases.shape
    rows, cols = height // 16, width // 16
    amounts = [
        rng.uniform(0, settings.clutter_max) if rng.random() < settings.clutter else 0.0
        for _ in range(count)
    ]
    chosen = torch.rand(count, 1, rows, cols, generator=generator)
    covered = (chosen < torch.tensor(amounts).view(count, 1, 1, 1)).float()
    mask = F.interpolate(covered, size=(height, width), mode="bilinear", align_corners=False)
    colours = torch.tensor([rgb(c) for c in (*world.PALETTE.values(), *world.BACKGROUNDS.values())])
    picks = torch.randint(len(colours), (count, rows, cols), generator=generator)
    blobs = colours[picks].permute(0, 3, 1, 2)
    blobs = F.interpolate(blobs, size=(height, width), mode="bilinear", align_corners=False)
    return canvases + mask * (blobs - canvases), mask.mean(dim=(1, 2, 3)), mask


def _matches(
    scenes: list[Scene], descriptions: list[Description], visible: torch.Tensor
) -> torch.Tensor:
    """(views, texts): whether each text is true of each view. make_cutouts flips half its
    views, so left and right are one place to CLIP; a view that misses the shape shows only
    the background, so only texts that say nothing but the background are true of it."""
    background_only = [
        text.background is not None
        and not (text.colour or text.shape or text.size or text.position)
        for text in descriptions
    ]
    return torch.tensor(
        [
            [
                text.describes(scene, mirrored=True) and (shows or alone)
                for text, alone in zip(descriptions, background_only, strict=True)
            ]
            for scene, shows in zip(scenes, visible.tolist(), strict=True)
        ],
        dtype=torch.float32,
    )


def _per_attribute(
    logits: torch.Tensor, match: torch.Tensor, sizes: list[int], weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The (weighted) mean over attributes of the cross-entropy within each attribute's
    columns."""
    losses = torch.stack(
        [
            _soft_cross_entropy(part, true)
            for part, true in zip(
                logits.split(sizes, dim=1), match.split(sizes, dim=1), strict=True
            )
        ]
    )
    return losses.mean() if weights is None else (losses * weights).sum() / weights.sum()


def _scene_losses(
    model: nn.Module,
    rng: random.Random,
    generator: torch.Generator,
    settings: CLIPTraining,
    attributes: list[Description],
    sizes: list[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch of captioned scenes: the image tower's features of its views, the
    contrastive and per-attribute loss, and which one-attribute texts each view shows."""
    resolution = SHAPES_CLIP["vision_cfg"]["image_size"]
    views, scenes, hidden, visible = _clip_batch(rng, generator, settings, resolution)
    captions = [random_description(scene, rng) for scene in scenes[:: settings.views]]
    texts = [text.text for text in captions + attributes]
    tokens = open_clip.tokenize(texts, context_length=model.context_length)
    features = model.encode_image(_normalised(views))
    images = F.normalize(features, dim=-1)
    words = model.encode_text(tokens, normalize=True)
    logits = model.logit_scale.exp() * images @ words.T
    match = _matches(scenes, captions + attributes, visible)
    count = len(captions)
    said, true = logits[:, :count], match[:, :count]
    clean = true * (1 - hidden[:, None]) ** 2
    contrastive = (_soft_cross_entropy(said, true) + _soft_cross_entropy(said.T, clean.T)) / 2
    attribute = _per_attribute(logits[:, count:], match[:, count:], sizes)
    return features, contrastive + attribute, match[:, count:]


def _adamw(parameters: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases, norms' scales and the logit scale."""
    return torch.optim.AdamW(
        [
            {"params": [p for p in parameters if p.ndim >= 2]},
            {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=lr,
        weight_decay=weight_decay,
    )


def _clip_step(model: nn.Module, optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One step of CLIP's optimiser, the logit scale held at most 100 as CLIP's is."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))


def _normalised(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def train_clip(settings: CLIPTraining = CLIPTraining(), progress: bool = True) -> CLIPModel:
    """A CLIP trained contrastively on captioned views of the world.

    Each batch pairs views with two kinds of text: a caption per scene, which says a random
    part of it, and every one-attribute text ("red", "a circle", "a shape at the top", ...).
    Several texts can be true of one view, so the loss spreads its target over all of them;
    the one-attribute texts are compared within their attribute, as CLIP's zero-shot
    classifiers are, which teaches every attribute from every view.

    From scratch, both towers first learn what is easy (colour, size, background) and the text
    tower's "a circle", "a square" and "a triangle" stay one point, so the image tower has no
    reason to tell them apart: a deadlock that takes thousands of steps to break. A linear probe
    on the image embeddings, trained beside them on the same attributes and thrown away after,
    gives the image tower that reason from the first step.

    The rows of the token embedding for words the world never uses are zero and stay zero
    (they get no gradient), so an unknown word reads as nothing rather than as random noise.
    """
    with _deterministic(settings.seed, settings.threads):
        rng = random.Random(settings.seed)
        generator = torch.Generator().manual_seed(settings.seed)
        model = build_clip(SHAPES_CLIP).train()
        with torch.no_grad():
            keep = torch.zeros(model.token_embedding.weight.shape[0], dtype=torch.bool)
            keep[_known_tokens()] = True
            model.token_embedding.weight[~keep] = 0
        resolution = SHAPES_CLIP["vision_cfg"]["image_size"]
        groups = attribute_descriptions()
        sizes = [len(group) for group in groups]
        attributes = [text for group in groups for text in group]
        probe = nn.Linear(SHAPES_CLIP["embed_dim"], len(attributes))
        # Shape is the attribute the image tower learns last; the probe asks for it most.
        weights = torch.tensor(
            [settings.shape_weight if group[0].shape else 1.0 for group in groups]
        )
        optimiser = _adamw(
            [*model.parameters(), *probe.parameters()], settings.lr, settings.weight_decay
        )
        bar = tqdm(range(settings.steps), desc="shapes CLIP", disable=not progress, position=1)
        for step in bar:
            for group in optimiser.param_groups:
                group["lr"] = settings.lr * _cosine(step, settings.steps, 100)
            features, captioned, match = _scene_losses(
                model, rng, generator, settings, attributes, sizes
            )
            probed = _per_attribute(probe(features), match, sizes, weights)
            if step < settings.probe_steps:
                loss = probed
            else:
                loss = captioned + settings.probe_weight * probed
            _clip_step(model, optimiser, loss)
            bar.set_postfix(loss=f"{loss.item():.3f}", probe=f"{probed.item():.3f}")
    return CLIPModel(model.eval(), resolution)


# --- CLIP, second stage --------------------------------------------------------------------


@dataclass
class _Chain:
    """A frame the engine is optimising from random codes towards `caption`, and the drawn
    scene the caption describes."""

    scene: Scene
    caption: str
    z: torch.Tensor
    adam: dict[str, torch.Tensor] | None = None
    age: int = 0


def _new_chain(engine: Engine, rng: random.Random, generator: torch.Generator) -> _Chain:
    # Prompts like the ones people write: colour, shape and size, mostly a background, at
    # times a place.
    scene = random_scene(rng)
    caption = Description(
        scene.colour,
        scene.shape,
        scene.size,
        scene.position if rng.random() < 0.3 else None,
        scene.background if rng.random() < 0.7 else None,
    )
    return _Chain(scene, caption.text, engine.random_latent(generator))


def _energies(
    clip: CLIPModel, images: torch.Tensor, texts: torch.Tensor, cuts: int, seed: int
) -> torch.Tensor:
    """The engine's loss of each image for its text, over the same `cuts` cutouts."""
    energies = []
    for image, text in zip(images, texts, strict=True):
        views = make_cutouts(
            image[None], cuts, clip.input_resolution, torch.Generator().manual_seed(seed)
        )
        energies.append(spherical_distance(clip.encode_image(views), text[None])[:, 0].mean())
    return torch.stack(energies)


def harden_clip(
    clip: CLIPModel,
    vqgan: VQGAN,
    settings: CLIPHardening = CLIPHardening(),
    progress: bool = True,
) -> CLIPModel:
    """Go on training a first-stage CLIP against the frames the engine makes with it.

    Trained on drawn scenes only, CLIP likes the engine's frames better than the scenes their
    prompts describe (a mass of the prompt's colour among blobs of every other: bench/
    RESULTS.md), and the engine finds those frames, not shapes. Here chains of frames are
    optimised from random codes through the VQGAN by the engine itself (its loss, cutouts and
    Adam, as a render's first frame), each towards its own caption, while CLIP learns that
    each chain's frame must cost more for its caption than the drawn scene it describes; the
    first stage's loss goes on beside, so CLIP keeps what it knew. The chains keep moving
    against the CLIP of the moment and start again from random codes at `chain_age` steps, so
    CLIP meets frames from every stage of a first frame's optimisation.
    """
    with _deterministic(settings.seed, settings.threads):
        rng = random.Random(settings.seed)
        generator = torch.Generator().manual_seed(settings.seed)
        model = clip.model
        model.train()
        for module in model.modules():
            # The running statistics stay the first stage's: these batches are few scenes.
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        model.requires_grad_(True)
        height, width = CANVAS[1], CANVAS[0]
        engine = Engine(
            vqgan,
            clip,
            EngineSettings(
                width=width,
                height=height,
                steps=settings.chain_steps,
                first_steps=settings.chain_age,
                cuts=settings.cuts,
                lr=settings.engine_lr,
                seed=settings.seed,
            ),
        )
        first_stage = CLIPTraining(scenes=settings.scenes)
        groups = attribute_descriptions()
        sizes = [len(group) for group in groups]
        attributes = [text for group in groups for text in group]
        optimiser = _adamw(list(model.parameters()), settings.lr, first_stage.weight_decay)
        chains = [_new_chain(engine, rng, generator) for _ in range(settings.chains)]
        bar = tqdm(
            range(settings.rounds), desc="shapes CLIP, against the engine", disable=not progress
        )
        for round_ in bar:
            picked = [
                chains[(round_ * settings.advance + i) % len(chains)]
                for i in range(settings.advance)
            ]
            engine.embeddings.clear()  # CLIP's text tower moved since the last round
            for chain in picked:
                chain.z, _, chain.adam = engine.optimise(
                    chain.z, ((chain.caption, 1.0),), settings.chain_steps, generator, chain.adam
                )
                chain.age += settings.chain_steps
            _, captioned, _ = _scene_losses(model, rng, generator, first_stage, attributes, sizes)
            tokens = open_clip.tokenize(
                [c.caption for c in picked], context_length=model.context_length
            )
            texts = model.encode_text(tokens, normalize=True)
            with torch.no_grad():
                frames = torch.cat([engine.latent_to_image(chain.z) for chain in picked])
            drawings = world.draw([chain.scene for chain in picked], width, height)
            # The same cutouts of a frame and of its drawing: only what they show differs.
            framed = _energies(clip, frames, texts, settings.judge_cuts, round_)
            drawn = _energies(clip, drawings, texts, settings.judge_cuts, round_)
            judged = (F.softplus((drawn - framed) / settings.tau) * settings.tau).mean()
            loss = captioned + settings.weight * judged
            _clip_step(model, optimiser, loss)
            for i, chain in enumerate(chains):
                if chain.age >= settings.chain_age:
                    chains[i] = _new_chain(engine, rng, generator)
            won = (drawn < framed).float().mean()
            bar.set_postfix(loss=f"{captioned.item():.3f}", drawings_win=f"{won.item():.2f}")
        model.eval().requires_grad_(False)
    return clip
