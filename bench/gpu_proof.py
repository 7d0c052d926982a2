"""What the engine does on a GPU, in one run of under 9 minutes: one report, gpu_proof.txt,
with its figures in gpu_proof.json (issue 35).

    .venv/bin/python bench/gpu_proof.py --device cuda [--out DIR]    # on the GPU machine
    .venv/bin/python bench/gpu_proof.py --tiny [--out DIR]           # tiny, on any device

It covers, each part timed and run in its own process (so a failure in one is reported and
the others still run; a part that would outrun the time left is skipped and said so):

1. tests: the tests marked `device` (the lean decoder's gradient against taming's, under
   bf16 autocast too; torch.compile; checkpointing; cutouts in batches; the memory fit; a
   killed render resumed to byte-identical frames; the video encoded while rendering), run
   on the device (`pytest -m device --device-under-test DEVICE`);
2. render: the whole anxiety storyboard rendered with random full-size weights, MP4 and all,
   its wall time measured (not projected), encoded while rendering and then after;
3. bench: `feverdream bench --compare --storyboard storyboards/anxiety.yaml --cuts 16
   --steps 10` at 288x512 and at 576x1024 (frames per hour, peak memory, the classic loop
   beside the default);
4. memory: each canvas's peak memory (288x512, 432x768, 576x1024) beside the estimate
   pipeline/memory.py makes, which chooses the execution;
5. compile: a step plain and through torch.compile, the compiled first step (compilation
   included), and after how many steps compilation has paid for itself, beside the rule
   pipeline/rendering.py follows (COMPILE_MIN_STEPS);
6. camera3d: `feverdream bench --storyboard storyboards/derealization.yaml` (the 3D camera):
   the depth model's share of a frame and the warp through its depth, at 288x512 (a 3D
   render resumed to byte-identical frames is among the `device` tests of part 1).

--tiny runs every part at a tiny size on the tiny models (one device test, a 64x112 canvas,
8 frames of a storyboard with the anxiety one's soundtrack), so that the test suite runs
the script end to end and it cannot rot; its figures mean nothing, and the report says what
each part needs a GPU for. In --tiny, torch.compile traces with the eager backend
(inductor's own kernels are proven by the compiled test in tests/test_execution.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STORYBOARD = ROOT / "storyboards" / "anxiety.yaml"
FULL_MODELS = ("vqgan_imagenet_f16_16384", "ViT-B/32")

NEEDS_A_GPU = {
    "tests": "cuDNN's and cuBLAS's kernels under the lean decoder's own backward and bf16 "
    "autocast, inductor's Triton kernels, and torch.cuda.mem_get_info in the memory fit",
    "bench": "the step's time and peak memory on the card users render on",
    "render": "a real render's wall time: the GPU engine with ffmpeg encoding beside it",
    "memory": "torch.cuda.max_memory_allocated against the estimate the execution is chosen by",
    "compile": "whether inductor's Triton kernels earn back their compilation, and after how "
    "many steps",
    "camera3d": "the depth model's forward pass at 518 px on the card, beside a frame's steps",
}
STORYBOARD_3D = ROOT / "storyboards" / "derealization.yaml"


class Proof:
    """The report as it is made: text lines and figures, written after each part."""

    def __init__(self, out: Path, device: str, tiny: bool, budget: float):
        self.out, self.device, self.tiny = out, device, tiny
        self.deadline = time.monotonic() + budget
        self.lines: list[str] = []
        self.figures: dict = {"device": device, "tiny": tiny, "machine": machine(device)}
        self.figures["command"] = " ".join([Path(sys.executable).name, *sys.argv])
        self.figures["parts"] = {}
        out.mkdir(parents=True, exist_ok=True)
        self.say(f"gpu_proof on {device} ({self.figures['machine']['name']}), {time.ctime()}")
        self.say(f"command: {self.figures['command']}")
        if tiny:
            self.say("tiny: every part at a tiny size on the tiny models; its figures mean nothing")

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def part(self, name: str, title: str, needs: float, run) -> None:
        """Run one part if about `needs` seconds are left, record what it found."""
        self.say()
        self.say(f"== {name}: {title}")
        if self.left() < needs:
            self.say(
                f"skipped: it needs about {needs:.0f} s and {max(0, self.left()):.0f} s are left"
            )
            self.figures["parts"][name] = {"skipped": "out of time"}
        else:
            started = time.monotonic()
            try:
                figures = run(self)
            except Exception as error:  # a part's failure is a finding: the others still run
                self.say(f"FAILED: {type(error).__name__}: {error}")
                figures = {"failed": f"{type(error).__name__}: {error}"}
            figures["seconds"] = round(time.monotonic() - started, 1)
            self.figures["parts"][name] = figures
        if self.tiny or not self.device.startswith("cuda"):
            self.say(f"on a GPU this part shows {NEEDS_A_GPU[name]}")
        self.write()

    def write(self) -> None:
        (self.out / "gpu_proof.txt").write_text("\n".join(self.lines) + "\n")
        (self.out / "gpu_proof.json").write_text(json.dumps(self.figures, indent=1) + "\n")


def machine(device: str) -> dict:
    import torch

    name = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
            break
    info = {
        "name": name,
        "cpu": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.startswith("cuda"):
        info["name"] = info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def command(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """One of the project's commands, as a user runs it (output kept for the report)."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=environment)  # fmt: skip


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --- the parts ----------------------------------------------------------------------------


def tests(proof: Proof) -> dict:
    # Only the files that hold marked tests: the others import what a GPU machine may lack
    # (Ray, selenium, Jupyter).
    files = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").glob("test_*.py")
        if "@pytest.mark.device" in path.read_text()
    )
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "device", "-n", "0",
            "--device-under-test", proof.device, *files]  # fmt: skip
    if proof.tiny:
        args += ["-k", "fitted_to_the_free_memory"]
    done = command(*args, timeout=max(60, proof.left()))
    counts = {
        word: int(number)
        for number, word in re.findall(
            r"(\d+) (passed|failed|errors?|skipped|deselected)", done.stdout
        )
    }
    proof.say(f"pytest {' '.join(args[5:])}")
    proof.say(tail(done.stdout, 1))
    if done.returncode != 0:
        proof.say(tail(done.stdout + done.stderr, 40))
    return {"exit": done.returncode, **counts}


def bench(proof: Proof) -> dict:
    sizes = ["64x112"] if proof.tiny else ["288x512", "576x1024"]
    figures = {}
    for size in sizes:
        args = ["-m", "pipeline", "bench", "--compare", "--size", size, "--device", proof.device,
                "--json"]  # fmt: skip
        if proof.tiny:  # no storyboard: its projection times ffmpeg at 1080x1920
            args += ["--vqgan", "tiny", "--clip", "tiny", "--cuts", "4", "--steps", "2",
                     "--repeats", "1", "--warmup", "0"]  # fmt: skip
        else:
            args += ["--storyboard", str(STORYBOARD), "--cuts", "16", "--steps", "10"]
            args += ["--repeats", "3", "--warmup", "1"]
        done = command(*args, timeout=max(60, proof.left()))
        if done.returncode != 0:
            raise RuntimeError(f"bench at {size} failed:\n{tail(done.stderr)}")
        results = json.loads(done.stdout)
        fast, classic = results["this render"], results["classic"]
        ratio = fast["frames_per_hour"] / classic["frames_per_hour"]
        projected = fast.get("extra", {}).get("projection", {}).get("total_seconds")
        proof.say(
            f"{size}: default {fast['frames_per_hour']:.0f} frames/hour (peak "
            f"{fast['peak_memory_gib']:.2f} GiB), classic {classic['frames_per_hour']:.0f} (peak "
            f"{classic['peak_memory_gib']:.2f} GiB): the default makes {ratio:.2f}x the classic "
            "loop's frames an hour"
            + (f"; the storyboard projected at {projected / 60:.1f} min" if projected else "")
        )
        figures[size] = {"default": fast, "classic": classic, "ratio": round(ratio, 3)}
    return figures


TINY_STORYBOARD = """\
title: gpu proof tiny
fps: 24
duration: 8f
render: {{size: 144x256, steps: 2, first_steps: 4, cuts: 4, cadence: 2}}
models: {{vqgan: tiny, clip: tiny}}
audio: {{file: {audio}}}
keyframes:
  - at: 0s
    prompt: "a narrow hallway that keeps stretching"
    zoom: 1.02
  - at: 4f
    prompt: "a racing heart"
"""


def render(proof: Proof) -> dict:
    figures = {}
    with tempfile.TemporaryDirectory(prefix="gpu-proof-") as folder:
        storyboard = STORYBOARD
        if proof.tiny:  # the anxiety storyboard's soundtrack and card, tiny everything else
            storyboard = Path(folder, "tiny.yaml")
            audio = ROOT / "audio" / "anxiety.wav"
            storyboard.write_text(TINY_STORYBOARD.format(audio=json.dumps(str(audio))))
        for encode in ("during", "after"):
            args = ["-m", "pipeline", "render", str(storyboard), "-o", f"{folder}/{encode}",
                    "--encode", encode, "--device", proof.device]  # fmt: skip
            args += [] if proof.tiny else ["--random-weights"]
            started = time.monotonic()
            done = command(*args, timeout=max(60, proof.left()))
            seconds = time.monotonic() - started
            if done.returncode != 0:
                raise RuntimeError(f"the render (--encode {encode}) failed:\n{tail(done.stderr)}")
            video = next(Path(folder, encode).rglob("*.mp4"))
            from pipeline import run

            checked = run.check(video)
            frames = len(list(video.parent.glob("frames/*.png")))
            proof.say(
                f"--encode {encode}: {frames} frames and the MP4 in {seconds:.1f} s wall "
                f"({seconds / frames:.2f} s a frame), models loading included; TikTok "
                f"{'accepts' if checked.accepted else 'REFUSES'} the video"
            )
            figures[encode] = {"seconds": round(seconds, 1), "frames": frames,
                               "accepted": checked.accepted}  # fmt: skip
    during, after = figures["during"]["seconds"], figures["after"]["seconds"]
    proof.say(f"encoding while rendering took {during / after:.2f}x the time of after")
    return figures


def memory(proof: Proof) -> dict:
    sizes = ["64x112"] if proof.tiny else ["288x512", "432x768", "576x1024"]
    models = ("tiny", "tiny") if proof.tiny else FULL_MODELS
    rows = []
    for size in sizes:
        done = command("bench/memory_by_canvas.py", "--one", size, "default", "--cuts", "16",
                       "--steps", "2", "--device", proof.device, "--models", *models,
                       timeout=max(60, proof.left()))  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"memory at {size} failed:\n{tail(done.stderr)}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        grown = row["peak_gib"] - row["before_steps_gib"]
        proof.say(
            f"{size}: peak {row['peak_gib']:.2f} GiB ({grown:.2f} over the models and the "
            f"engine), estimate {row['estimate_gib']:.2f} GiB for the step, {row['execution']}: "
            + (
                "at or above what it grew"
                if row["estimate_gib"] >= grown
                else "an UNDERESTIMATE (pipeline/memory.py's SLACK would need raising)"
            )
        )
        rows.append(row)
    return {"rows": rows}


def compile_pays(proof: Proof) -> dict:
    args = [__file__, "--compile-probe", "--device", proof.device]
    done = command(*args, *(["--tiny"] if proof.tiny else []), timeout=max(60, proof.left()))
    if done.returncode != 0:
        raise RuntimeError(f"the compile probe failed:\n{tail(done.stderr)}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    from pipeline.rendering import COMPILE_MIN_STEPS

    pays = figures["pays_after_steps"]
    proof.say(
        f"a step {figures['plain_step']:.4f} s plain, {figures['compiled_step']:.4f} s compiled "
        f"({figures['compiled_step'] / figures['plain_step']:.2f}x the plain step's time); the "
        f"compiled first step {figures['compiled_first']:.1f} s; "
        + (f"compilation pays after {pays:.0f} steps" if pays else "compilation never pays")
        + f" (--compile auto turns it on for renders of {COMPILE_MIN_STEPS} steps or more)"
    )
    return figures


def probe_compile(device: str, tiny: bool) -> dict:
    """A render's step plain and compiled, at the anxiety storyboard's canvas and cutouts."""
    import torch

    from pipeline.engine import Engine, frame_generator
    from pipeline.models.loading import load_models
    from pipeline.settings import EngineSettings, Execution, Speed

    if tiny:  # dynamo's tracing and the timing, not inductor's kernels (see the docstring)
        import functools

        torch.compile = functools.partial(torch.compile, backend="eager")
    vqgan, clip = load_models(*(("tiny", "tiny") if tiny else FULL_MODELS), device, True)
    width, height, cuts = (64, 112, 4) if tiny else (288, 512, 32)
    speed = Speed.fast(device, 5)
    timings = {}
    for compiled in (False, True):
        execution = Execution(lean_decoder=True, compile=compiled)
        settings = EngineSettings(width, height, 1, 1, cuts, 0.1, 0, device, speed,
                                  execution=execution)  # fmt: skip
        engine = Engine(vqgan, clip, settings)
        prompts = (("a narrow hallway", 1.0),)
        engine.embed([text for text, _ in prompts])
        z = engine.random_latent(frame_generator(0, 0, device))
        steps = []
        for index in range(6):
            started = time.perf_counter()
            z = engine.optimise(z, prompts, 1, frame_generator(0, index + 1, device)).z
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            steps.append(time.perf_counter() - started)
        timings[compiled] = (steps[0], statistics.median(steps[1:]))
    (_, plain), (first, compiled_step) = timings[False], timings[True]
    saved = plain - compiled_step
    return {
        "plain_step": plain,
        "compiled_step": compiled_step,
        "compiled_first": first,
        "pays_after_steps": (first - compiled_step) / saved if saved > 0 else None,
        "canvas": f"{width}x{height}",
        "cuts": cuts,
    }


def camera3d(proof: Proof) -> dict:
    args = ["-m", "pipeline", "bench", "--device", proof.device, "--json"]
    if proof.tiny:  # no storyboard: its projection times ffmpeg at 1080x1920
        args += ["--vqgan", "tiny", "--clip", "tiny", "--depth", "tiny", "--size", "64x112",
                 "--cuts", "4", "--steps", "2", "--repeats", "1", "--warmup", "0"]  # fmt: skip
    else:
        args += ["--storyboard", str(STORYBOARD_3D), "--repeats", "3", "--warmup", "1"]
    done = command(*args, timeout=max(60, proof.left()))
    if done.returncode != 0:
        raise RuntimeError(f"the 3D camera's bench failed:\n{tail(done.stderr)}")
    result = json.loads(done.stdout)["this render"]
    timings, cadence = result["timings"], result["settings"]["cadence"]
    share = timings["depth"] / cadence / result["seconds_per_frame"]
    proof.say(
        f"depth {timings['depth']:.3f} s and warp {timings['warp_3d']:.3f} s per optimised "
        f"frame, a frame between {timings['in_between']:.4f} s: the depth model is "
        f"{100 * share:.1f}% of a frame's time ({result['frames_per_hour']:.0f} frames/hour, "
        f"peak {result['peak_memory_gib']:.2f} GiB)"
    )
    return {"timings": timings, "depth_share": round(share, 4), "result": result}


PARTS = [  # name, title, about how long it needs on a GPU (s), tiny (s)
    ("tests", "the tests marked `device`, on the device", 120, 20, tests),
    ("render", "the anxiety storyboard, whole, wall time", 130, 30, render),
    ("bench", "feverdream bench --compare, 16 cutouts, 10 steps", 80, 20, bench),
    ("memory", "peak memory per canvas beside the estimate", 60, 20, memory),
    ("compile", "whether torch.compile pays, and when", 80, 20, compile_pays),
    ("camera3d", "the 3D camera: the depth model's share of a frame", 50, 15, camera3d),
]  # the GPU's figures add up to the default budget, 520 s: each part is skipped, not cut
# short, when less is left than it needs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if seen)")
    parser.add_argument("--tiny", action="store_true", help="every part tiny, on the tiny models")
    names = ",".join(part[0] for part in PARTS)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "gpu_proof",
        help="the report's folder (default bench/results/gpu_proof)",
    )  # fmt: skip
    parser.add_argument(
        "--budget", type=float, default=520,
        help="seconds in all; a part that would not fit what is left is skipped (default 520)",
    )  # fmt: skip
    parser.add_argument("--parts", default=names, help=f"which, comma-separated (default {names})")
    parser.add_argument("--compile-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))  # the checkout's pipeline, installed or not
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.compile_probe:
        print(json.dumps(probe_compile(device, args.tiny)))
        return 0
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA GPU here")
    proof = Proof(args.out, device, args.tiny, args.budget)
    chosen = args.parts.split(",")
    for name, title, needs, tiny_needs, run in PARTS:
        if name in chosen:
            proof.part(name, title, tiny_needs if args.tiny else needs, run)
    failed = [name for name, part in proof.figures["parts"].items() if "failed" in part]
    failed += ["tests"] if proof.figures["parts"].get("tests", {}).get("exit") else []
    proof.say()
    proof.say(f"report: {args.out / 'gpu_proof.txt'} (figures: gpu_proof.json)")
    if failed:
        proof.say(f"FAILED: {', '.join(dict.fromkeys(failed))}")
    proof.write()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
