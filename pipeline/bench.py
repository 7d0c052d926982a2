"""How fast the engine runs here: one optimisation step taken apart, frames per hour, and
the projected time of a render, measured with random full-size weights (the same compute
as the trained models, so a user can measure before downloading a gigabyte)."""

from __future__ import annotations

import logging
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from pipeline.engine import Anchor, Engine, frame_generator, in_between
from pipeline.schedule import Plan
from pipeline.settings import EngineSettings, Execution, Speed
from pipeline.storyboard import Models, RenderSettings

log = logging.getLogger(__name__)


@dataclass
class Timings:
    """Median seconds of each part of a step, measured in isolation, and of whole steps."""

    quantize: float
    decode_forward: float
    decode_backward: float
    cutouts: float
    clip_forward: float
    clip_backward: float
    optimiser: float
    step: float  # one whole step as the engine runs it
    encode: float  # per optimised frame (picture → latents), not per step
    decode_image: float  # per optimised frame (the frame's picture, no gradient)
    in_between: float  # per frame made between optimised ones
    # With the 3D camera, per optimised frame: the depth model's estimate, and the warp
    # through the depth (0 without it).
    depth: float = 0.0
    warp_3d: float = 0.0

    @property
    def parts(self) -> float:
        return (
            self.quantize
            + self.decode_forward
            + self.decode_backward
            + self.cutouts
            + self.clip_forward
            + self.clip_backward
            + self.optimiser
        )


@dataclass
class BenchResult:
    settings: dict
    machine: dict
    timings: Timings
    seconds_per_frame: float
    frames_per_hour: float
    peak_memory_gib: float
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        data["timings"]["parts"] = self.timings.parts
        data["timings"]["step_over_parts"] = self.timings.step / self.timings.parts
        return data


def machine_info(device: str) -> dict:
    info = {
        "cpu": _cpu_name(),
        "cores": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_time(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(engine: Engine, repeats: int = 5, warmup: int = 2) -> Timings:
    """Time each part of a step alone, then the engine's own step, after `warmup` untimed
    runs. Every part is the engine's function the render calls, so a change to the engine
    shows here."""
    device = engine.device
    generator = frame_generator(0, 0, device)
    z = engine.random_latent(generator).requires_grad_(True)
    targets, weights = engine.targets((("a benchmark prompt", 1.0), ("a negative prompt", -1.0)))
    settings = engine.settings

    def timed(run: Callable[[], object]) -> float:
        for _ in range(warmup):
            run()
        return _median_time(run, device, repeats)

    def timed_backward(forward: Callable[[], torch.Tensor]) -> float:
        # Each backward needs a fresh graph; only the backward itself is timed.
        times = []
        for _ in range(warmup + repeats):
            output = forward()
            _sync(device)
            start = time.perf_counter()
            output.sum().backward()
            _sync(device)
            times.append(time.perf_counter() - start)
        return statistics.median(times[warmup:])

    z_q = engine.vqgan.quantize_st(z).detach().requires_grad_(True)
    quantize = timed(lambda: engine.vqgan.quantize_st(z))

    def decode() -> torch.Tensor:
        with engine.vqgan_precision():
            return engine.decode(z_q).float()

    decode_forward = timed(decode)
    decode_backward = timed_backward(decode)

    image = decode().detach().add(1).div(2).clamp(0, 1).requires_grad_(True)
    cutouts = timed(lambda: engine.cutouts(image, generator))
    views = [view.requires_grad_(True) for view in engine.cutouts(image.detach(), generator)]
    clip_forward = timed(lambda: engine.clip_loss(views, targets, weights))
    clip_backward = timed_backward(lambda: engine.clip_loss(views, targets, weights))

    optimiser = torch.optim.Adam([z], lr=settings.lr)
    z.grad = torch.randn_like(z)
    optimiser_time = timed(lambda: engine.update(z, optimiser))
    step = timed(lambda: engine.step(z, optimiser, targets, weights, generator))

    picture = image.detach()
    encode = timed(lambda: engine.image_to_latent(picture))
    with torch.no_grad():
        decode_image = timed(lambda: engine.latent_to_image(z))
    # With the 3D camera, the picture's depth, estimated once for the moves timed below.
    depth = None if engine.depth_model is None else engine.depth_of(picture)
    between = _in_between_time(picture, depth, timed)
    depth_time = warp_3d = 0.0
    if depth is not None:
        depth_time = timed(lambda: engine.depth_of(picture))
        warp_3d = _warp_3d_time(picture, depth, timed)
    return Timings(
        quantize,
        decode_forward,
        decode_backward,
        cutouts,
        clip_forward,
        clip_backward,
        optimiser_time,
        step,
        encode,
        decode_image,
        between,
        depth_time,
        warp_3d,
    )


def _bench_plan(camera_3d: bool) -> Plan:
    """Three frames of a zoom, turn and pan (through the 3D camera when it moves)."""
    from pipeline.schedule import FramePlan

    moves = {"translate": (1.0, 0.0, 0.01), "rotate_3d": (0.0, 0.3, 0.0), "fov": 40.0}
    frames = tuple(
        FramePlan(
            i, i / 24, 1.01, 0.3, 0.5, 0.0, False, (("a", 1.0),), **(moves if camera_3d else {})
        )  # fmt: skip
        for i in range(3)
    )
    return Plan(24, 3 / 24, frames, (), ())


def _in_between_time(picture: torch.Tensor, depth: torch.Tensor | None, timed) -> float:
    """A frame made between two optimised ones (through their depth with the 3D camera)."""
    plan = _bench_plan(depth is not None)
    a = Anchor(0, torch.zeros(1), picture, None, depth=depth)
    b = Anchor(2, torch.zeros(1), picture, None, depth=depth)
    with torch.no_grad():
        return timed(lambda: in_between(plan, a, b, 1))


def _warp_3d_time(picture: torch.Tensor, depth: torch.Tensor, timed) -> float:
    """An optimised frame's start moved through its depth (Engine.move_3d, without the
    encoder, which `encode` times)."""
    from pipeline import camera3d

    plan = _bench_plan(True)
    with torch.no_grad():
        return timed(lambda: camera3d.moved(plan, picture, depth, 0, 2))


def frame_seconds(timings: Timings, settings: EngineSettings) -> float:
    """Average seconds per output frame after the first: optimised frames every `cadence`."""
    speed = settings.speed
    optimised = settings.steps * timings.step + timings.decode_image
    optimised += timings.depth + timings.warp_3d
    if not speed.latent_warp:
        optimised += timings.encode
    made_between = (speed.cadence - 1) * timings.in_between
    return (optimised + made_between) / speed.cadence


def project(
    plan: Plan, timings: Timings, settings: EngineSettings, encode_seconds_per_frame: float
) -> dict:
    """The time a render of `plan` would take with these settings, from measured timings:
    the engine's, and encoding's at `encode_seconds_per_frame` (measure_encoding), with the
    MP4 encoded after the frames (the sum) and while they are made (on a GPU, where the
    encoder has the CPU to itself: the slower of the two, and then the frames made with the
    last optimised one). `total_seconds` is the way a render on this device encodes."""
    anchors = plan.optimised_frames(settings.speed.cadence)
    starts = {0} | {fp.frame for fp in plan.frames if fp.cut}
    seconds = len(anchors) * (timings.depth + timings.warp_3d)
    for index in anchors:
        if index in starts:
            seconds += settings.first_steps * timings.step + timings.decode_image
        else:
            seconds += settings.steps * timings.step + timings.decode_image
            seconds += 0.0 if settings.speed.latent_warp else timings.encode
    seconds += (plan.n_frames - len(anchors)) * timings.in_between
    encoding = plan.n_frames * encode_seconds_per_frame
    after = seconds + encoding
    during = max(seconds, encoding) + settings.speed.cadence * encode_seconds_per_frame
    return {
        "frames": plan.n_frames,
        "optimised_frames": len(anchors),
        "engine_seconds": seconds,
        "encode_seconds": encoding,
        "encode_seconds_per_frame": encode_seconds_per_frame,
        "total_seconds_encoding_after": after,
        "total_seconds_encoding_during": during,
        "encoding_during": settings.device.startswith("cuda"),
        "total_seconds": during if settings.device.startswith("cuda") else after,
    }


def measure_encoding(
    canvas: tuple[int, int], size: tuple[int, int], fps: int, frames: int = 24
) -> float:
    """Seconds per frame that encoding the video costs here: `frames` noise frames at the
    engine's `canvas` (width, height) through the renderer's own encoder, to an MP4 of
    `size` (noise is the hardest case for H.264; real frames encode a little faster)."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from pipeline.render import VideoSpec, encode_video

    rng = np.random.default_rng(0)
    pictures = [
        rng.integers(0, 256, (canvas[1], canvas[0], 3), dtype=np.uint8) for _ in range(frames)
    ]
    with tempfile.TemporaryDirectory(prefix="feverdream-bench-") as folder:
        started = time.perf_counter()
        encode_video(pictures, frames, VideoSpec(fps=fps, size=size), Path(folder) / "bench.mp4",
                     progress=False)  # fmt: skip
        return (time.perf_counter() - started) / frames


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_bench(engine: Engine, repeats: int = 5, warmup: int = 2) -> BenchResult:
    timings = measure(engine, repeats, warmup)
    per_frame = frame_seconds(timings, engine.settings)
    return BenchResult(
        settings=engine.settings.record(),
        machine=machine_info(engine.settings.device),
        timings=timings,
        seconds_per_frame=per_frame,
        frames_per_hour=3600 / per_frame,
        peak_memory_gib=peak_memory_gib(engine.device),
    )


def describe(result: BenchResult) -> str:
    """A readable report of one benchmark."""
    t = result.timings
    s = result.settings
    lines = [
        f"{s['width']}x{s['height']}, {s['cuts']} cuts, {s['steps']} steps per frame, "
        f"cadence {s['cadence']}, {'bf16' if s['bf16'] else 'fp32'} VQGAN, "
        f"{'latent' if s['latent_warp'] else 'picture'} warp, {result.extra.get('execution')}, "
        f"on {result.machine['device']} "
        f"({result.machine.get('gpu') or result.machine['cpu']})",
        "one step, its parts measured alone (median seconds):",
    ]
    for name in (
        "quantize",
        "decode_forward",
        "decode_backward",
        "cutouts",
        "clip_forward",
        "clip_backward",
        "optimiser",
    ):
        value = getattr(t, name)
        lines.append(f"  {name:<16} {value:8.4f}  {100 * value / t.parts:5.1f}%")
    lines += [
        f"  {'sum of parts':<16} {t.parts:8.4f}",
        f"  {'whole step':<16} {t.step:8.4f}  ({t.step / t.parts:.2f}x the sum of its parts)",
        f"per optimised frame: encode {t.encode:.3f} s, decode its picture {t.decode_image:.3f} s;"
        f" per frame between: {t.in_between:.4f} s",
        *_depth_lines(result),
        f"seconds per frame: {result.seconds_per_frame:.2f}  "
        f"frames per hour: {result.frames_per_hour:.0f}  "
        f"peak memory: {result.peak_memory_gib:.2f} GiB",
    ]
    return "\n".join(lines)


def _depth_lines(result: BenchResult) -> list[str]:
    """The 3D camera's cost, when it was measured: the depth model's share of a frame."""
    t = result.timings
    if not t.depth:
        return []
    cadence = result.settings["cadence"]
    share = (t.depth / cadence) / result.seconds_per_frame
    return [
        f"3D camera ({result.extra.get('depth', 'depth model')}), per optimised frame: depth "
        f"{t.depth:.3f} s ({100 * share:.1f}% of a frame's time), warp {t.warp_3d:.3f} s"
    ]


def bench_engines(
    speeds: dict[str, Speed],
    device: str,
    render: RenderSettings | None = None,
    models: Models | None = None,
    *,
    plan: Plan | None = None,
    video: tuple[tuple[int, int], int] | None = None,
    size: tuple[int, int] | None = None,
    steps: int | None = None,
    cuts: int | None = None,
    vqgan: str | None = None,
    clip: str | None = None,
    repeats: int = 5,
    warmup: int = 2,
    executions: dict[str, Execution] | None = None,
    depth: str | None = None,
) -> dict[str, BenchResult]:
    """Benchmark the engine with each of `speeds` on a storyboard's (or the default) models
    built with random weights and its render settings (each overridable); with `plan`, also
    project its render, with encoding to the `video` ((width, height), fps; default 1080x1920
    at the plan's fps) measured here. Each speed runs with its `executions` entry (default
    Execution(), the classic loop's).

    Peak memory is the process's high-water mark (on a CPU, its resident size), which never
    falls: an entry's figure is its own only if it uses the most memory so far, so list the
    leaner engines first.

    With `depth` (a depth model's registry name), the 3D camera is timed too: that model's
    estimate and the warp through it, once per optimised frame."""
    from pipeline.models.loading import load_all, load_depth_model

    render, models = render or RenderSettings(), models or Models()
    clips = ((clip, 1.0),) if clip else models.clips
    vqgan_model, clip_models = load_all(vqgan or models.vqgan, clips, device, random_weights=True)
    depth_model = None if depth is None else load_depth_model(depth, device, random_weights=True)
    width, height = size or (render.width, render.height)
    encode_rate = None
    if plan is not None:
        (video_width, video_height), fps = video or ((1080, 1920), plan.fps)
        encode_rate = measure_encoding((width, height), (video_width, video_height), fps)
    results = {}
    for label, speed in speeds.items():
        settings = EngineSettings(
            width=width,
            height=height,
            steps=steps or render.steps,
            first_steps=render.first_steps,
            cuts=cuts or render.cuts,
            lr=render.lr,
            seed=0,
            device=device,
            speed=speed,
            execution=(executions or {}).get(label, Execution()),
        )
        engine = Engine(vqgan_model, clip_models, settings, depth_model)
        result = run_bench(engine, repeats, warmup)
        result.extra["execution"] = settings.execution.describe()
        if depth is not None:
            result.extra["depth"] = depth
        result.extra["models"] = {"vqgan": vqgan or models.vqgan, "clip": [list(c) for c in clips]}
        if plan is not None and encode_rate is not None:
            result.extra["projection"] = project(plan, result.timings, settings, encode_rate)
        results[label] = result
    return results
