"""Turns frames and a soundtrack into a TikTok-ready MP4, a contact sheet, a preview GIF."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from pipeline.errors import DiskFullError, RenderError
from pipeline.store import atomic_write, free_space, full_disk_said

log = logging.getLogger(__name__)

#: A frame is a PNG (or any image Pillow reads) on disk, or an HxWx3 uint8 RGB array.
Frame = Path | np.ndarray

AUDIO_RATE = 48_000
AUDIO_BITRATE = "192k"

#: x264 presets that still produce High profile (ultrafast drops to Constrained Baseline).
PRESETS = ("superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")

# swscale's Lanczos; accurate_rnd and full_chroma_int keep the RGB -> YUV conversion of
# the upscaled picture sharp. BT.709 because phones decode HD video with that matrix.
_SCALE_OPTIONS = "flags=lanczos+accurate_rnd+full_chroma_int:out_color_matrix=bt709:out_range=tv"
_COLOR_TAGS = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"]

_CARD_BACKGROUND = (12, 12, 16)
_CARD_TEXT = (238, 238, 238)
_FONT_FILE = "DejaVuSans-Bold.ttf"

_GIF_MAX_BYTES = 5_000_000
_STDERR_TAIL_LINES = 12


@dataclass(frozen=True)
class SoundtrackSpec:
    """The storyboard's `audio` block, with times in seconds."""

    path: Path
    offset: float = 0.0
    fade_in: float = 0.0
    fade_out: float = 0.0


@dataclass(frozen=True)
class VideoSpec:
    """What the final MP4 looks like; built by the CLI from the storyboard."""

    fps: int
    size: tuple[int, int] = (1080, 1920)
    audio: SoundtrackSpec | None = None
    content_warning: str | None = None
    content_warning_duration: float = 1.5
    preset: str = "medium"
    crf: int = 18

    def __post_init__(self) -> None:
        width, height = self.size
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, not {self.fps}")
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"size must be two positive even numbers (yuv420p), not {self.size}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {self.preset!r}")
        if self.content_warning_duration < 0:
            raise ValueError("content_warning_duration must not be negative")

    @property
    def card_frames(self) -> int:
        """Frames the content-warning card adds before the storyboard's first frame."""
        if not self.content_warning:
            return 0
        return round(self.content_warning_duration * self.fps)


# --- the soundtrack ----------------------------------------------------------------------


@dataclass(frozen=True)
class SoundtrackInfo:
    """What the mixer needs to know about a track that decodes."""

    duration: float  # seconds, the whole file
    channels: int


def check_soundtrack(track: SoundtrackSpec) -> SoundtrackInfo:
    """Decode the whole track with the bundled ffmpeg; say how long it is and its channels.

    Called before the engine starts, so that a missing or corrupt file fails in seconds
    rather than after hours of frames.
    """
    if not track.path.is_file():
        raise RenderError(f"soundtrack {track.path} does not exist")
    # Decoding to 8 kHz mono keeps this cheap; the byte count gives the exact duration.
    # No -xerror: many playable mp3s make the decoder complain about a frame or two.
    command = [ffmpeg_exe(), *"-nostdin -hide_banner -loglevel error -i".split(), str(track.path)]
    command += "-map 0:a:0 -ac 1 -ar 8000 -f s16le pipe:1".split()
    result = subprocess.run(command, capture_output=True)
    if result.returncode != 0 or not result.stdout:
        reason = _tail(result.stderr.decode(errors="replace")) or "it holds no audio"
        raise RenderError(
            f"soundtrack {track.path} cannot be decoded: {reason}\n"
            "Is it a real audio file (wav, mp3, flac, ogg, m4a)? Try playing it, or convert "
            "it to wav."
        )
    if result.stderr.strip():
        log.warning(
            "ffmpeg decoded %s with complaints: %s",
            track.path,
            _tail(result.stderr.decode(errors="replace")),
        )
    try:
        with av.open(str(track.path)) as container:
            channels = container.streams.audio[0].codec_context.channels
    except (av.FFmpegError, IndexError) as error:
        raise RenderError(f"soundtrack {track.path} cannot be read: {error}") from error
    return known_soundtrack(track, len(result.stdout) / 2 / 8000, channels)


def known_soundtrack(track: SoundtrackSpec, duration: float, channels: int) -> SoundtrackInfo:
    """A track already decoded elsewhere (the soundtrack's analysis reads the whole file):
    its length and channels, with the offset checked against the length and the file opened
    (not decoded) the way the video's mixer will read it."""
    try:
        with av.open(str(track.path)) as container:
            container.streams.audio[0]
    except (av.FFmpegError, IndexError, OSError) as error:
        raise RenderError(
            f"soundtrack {track.path} cannot be read by ffmpeg, which mixes it into the video "
            f"({error}); convert it to wav"
        ) from None
    if track.offset >= duration:
        raise RenderError(
            f"soundtrack offset {track.offset:g}s is past the end of {track.path} "
            f"({duration:.2f}s long): lower `audio.offset`"
        )
    return SoundtrackInfo(duration=duration, channels=channels)


# --- the video ---------------------------------------------------------------------------


def encode_video(
    frames: Iterable[Frame],
    n_frames: int,
    spec: VideoSpec,
    out: Path,
    progress: bool = False,
    *,
    soundtrack: SoundtrackInfo | None = None,
    on_frame: Callable[[int, int], None] | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
) -> Path:
    """Stream `n_frames` engine frames (plus the card and the soundtrack) into an MP4 at `out`.

    Frames are piped at the engine canvas size and upscaled inside ffmpeg, so no frame is
    ever stored at output size. `out` appears only once the file is complete. `soundtrack`
    is `spec.audio` already checked (else it is decoded here to check it); `on_frame` is
    told (frames written, n_frames) as frames go in; `on_start` is given the ffmpeg process
    (an encoder in another thread kills it to stop at once).
    """
    if n_frames < 1:
        raise RenderError("a video needs at least one frame")
    if spec.audio is None:
        soundtrack = None
    elif soundtrack is None:
        soundtrack = check_soundtrack(spec.audio)
    frame_iter = iter(frames)
    try:
        first = _as_rgb(next(frame_iter))
    except StopIteration:
        raise RenderError("no frames to encode") from None
    canvas = (first.shape[1], first.shape[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")

    with (
        full_disk_said(Path(tempfile.gettempdir())),  # the card and ffmpeg's log
        tempfile.TemporaryDirectory(prefix="feverdream-render-") as tmp,
    ):
        card_png = None
        if spec.card_frames:
            card_png = Path(tmp) / "card.png"
            content_warning_card(spec.content_warning or "", spec.size).save(card_png)
        command = _ffmpeg_command(canvas, n_frames, spec, soundtrack, card_png, partial)
        log.debug("ffmpeg: %s", " ".join(command))
        stderr_path = Path(tmp) / "ffmpeg.log"
        with stderr_path.open("wb") as stderr:
            # Its own session: a Ctrl-C in the terminal reaches us, and we stop ffmpeg and
            # delete the partial file, instead of ffmpeg dying first with an error of its own.
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stderr=stderr, bufsize=0, start_new_session=True
            )
        try:
            if on_start is not None:
                on_start(process)
            _stream_frames(process, first, frame_iter, n_frames, canvas, progress, on_frame)
            returncode = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            partial.unlink(missing_ok=True)
            raise
        if returncode != 0:
            written = partial.stat().st_size if partial.exists() else 0
            partial.unlink(missing_ok=True)
            problems = stderr_path.read_text(errors="replace")
            room = free_space(out.parent)
            if (
                "No space left on device" in problems
                or "Disk quota exceeded" in problems
                or (room is not None and room < 2**20)  # its log may not have been written
            ):
                raise DiskFullError(out.parent, written or None, room)
            raise RenderError(
                f"ffmpeg could not write {out} (exit status {returncode}):\n" + _tail(problems)
            )
    os.replace(partial, out)
    log.info("wrote %s (%d frames at %d fps)", out, n_frames + spec.card_frames, spec.fps)
    return out


def _ffmpeg_command(
    canvas: tuple[int, int],
    n_frames: int,
    spec: VideoSpec,
    soundtrack: SoundtrackInfo | None,
    card_png: Path | None,
    out: Path,
) -> list[str]:
    """Inputs: raw frames on stdin, then the card image and the soundtrack when there are."""
    fps = str(spec.fps)
    width, height = canvas
    command = [ffmpeg_exe(), *"-hide_banner -nostats -loglevel error -y".split()]
    command += [*"-f rawvideo -pix_fmt rgb24".split(), "-video_size", f"{width}x{height}"]
    command += ["-framerate", fps, "-i", "pipe:0"]
    card_input = None
    if card_png is not None:
        card_input = 1
        command += ["-loop", "1", "-framerate", fps, "-i", str(card_png)]
    graph = [_video_graph(canvas, spec, card_input)]
    encode = ["-map", "[v]"]
    if spec.audio is not None and soundtrack is not None:
        audio_input = 2 if card_input else 1
        command += ["-i", str(spec.audio.path)]
        graph.append(_audio_graph(audio_input, soundtrack, n_frames, spec))
        encode += [*"-map [a] -c:a aac -profile:a aac_low -ac 2".split()]
        encode += ["-b:a", AUDIO_BITRATE, "-ar", str(AUDIO_RATE)]
    else:
        encode += ["-an"]
    encode += [*"-c:v libx264 -profile:v high -pix_fmt yuv420p".split(), *_COLOR_TAGS]
    encode += ["-preset", spec.preset, "-crf", str(spec.crf), "-fps_mode", "cfr", "-r", fps]
    encode += [*"-movflags +faststart -f mp4".split(), str(out)]
    return [*command, "-filter_complex", ";".join(graph), *encode]


def _stream_frames(
    process: subprocess.Popen,
    first: np.ndarray,
    rest: Iterator[Frame],
    n_frames: int,
    canvas: tuple[int, int],
    progress: bool,
    on_frame: Callable[[int, int], None] | None = None,
) -> None:
    """Write every frame to ffmpeg's stdin, checking count and size as they pass."""
    assert process.stdin is not None
    written = 0
    with tqdm(total=n_frames, unit="frame", desc="encoding", disable=not progress) as bar:

        def wrote() -> None:
            bar.update()
            if on_frame is not None:
                on_frame(written, n_frames)

        try:
            process.stdin.write(first.tobytes())
            written = 1
            wrote()
            for index, frame in enumerate(rest, start=1):
                if index >= n_frames:
                    raise RenderError(f"more frames than the {n_frames} expected")
                rgb = _as_rgb(frame)
                if (rgb.shape[1], rgb.shape[0]) != canvas:
                    raise RenderError(
                        f"frame {index} is {rgb.shape[1]}x{rgb.shape[0]}, but the first frame "
                        f"was {canvas[0]}x{canvas[1]}: every frame must have the canvas size"
                    )
                process.stdin.write(rgb.tobytes())
                written += 1
                wrote()
            if written != n_frames:
                raise RenderError(f"only {written} frames of the {n_frames} expected")
            process.stdin.close()
        except BrokenPipeError:
            # ffmpeg stopped reading; its exit status and stderr say why.
            pass


def _video_graph(canvas: tuple[int, int], spec: VideoSpec, card_input: int | None) -> str:
    """The filter chain: crop to the output's aspect, Lanczos upscale, then the card first."""
    width, height = spec.size
    steps = []
    crop = _crop_box(canvas, spec.size)
    if crop is not None:
        crop_w, crop_h, x, y = crop
        log.info(
            "the %dx%d canvas is not the shape of %dx%d: cropping it to %dx%d (never stretching)",
            *canvas,
            width,
            height,
            crop_w,
            crop_h,
        )
        steps.append(f"crop={crop_w}:{crop_h}:{x}:{y}")
    steps += [f"scale={width}:{height}:{_SCALE_OPTIONS}", "format=yuv420p", "setsar=1"]
    if card_input is None:
        return f"[0:v]{','.join(steps)}[v]"
    card = (
        f"[{card_input}:v]trim=end_frame={spec.card_frames},"
        f"scale={width}:{height}:{_SCALE_OPTIONS},format=yuv420p,setsar=1[card]"
    )
    return f"[0:v]{','.join(steps)}[frames];{card};[card][frames]concat=n=2:v=1:a=0[v]"


def _crop_box(canvas: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The centred (w, h, x, y) crop of the canvas with the output's aspect; None if it has it."""
    canvas_w, canvas_h = canvas
    width, height = size
    if canvas_w * height == canvas_h * width:
        return None
    if canvas_w * height > canvas_h * width:
        crop_w, crop_h = round(canvas_h * width / height), canvas_h
    else:
        crop_w, crop_h = canvas_w, round(canvas_w * height / width)
    return crop_w, crop_h, (canvas_w - crop_w) // 2, (canvas_h - crop_h) // 2


def _audio_graph(
    audio_input: int, soundtrack: SoundtrackInfo, n_frames: int, spec: VideoSpec
) -> str:
    """Soundtrack from its offset, padded or trimmed to the frames, faded, delayed past the card."""
    track = spec.audio
    assert track is not None
    # Counting in samples keeps audio and video lengths equal to well under a frame.
    samples = round(n_frames * AUDIO_RATE / spec.fps)
    duration = n_frames / spec.fps
    steps = ["asetpts=PTS-STARTPTS", f"aresample={AUDIO_RATE}"]
    if soundtrack.channels == 1:
        # FFmpeg's own upmix puts a mono track 3 dB down on each side; a mono soundtrack
        # should sound as loud as it does on its own, so it goes to both sides whole.
        steps.append("pan=stereo|c0=c0|c1=c0")
    steps += [
        "aformat=sample_fmts=fltp:channel_layouts=stereo",
        f"atrim=start_sample={round(track.offset * AUDIO_RATE)}",
        "asetpts=PTS-STARTPTS",
        f"apad=whole_len={samples}",
        f"atrim=end_sample={samples}",
    ]
    if track.fade_in > 0:
        steps.append(f"afade=t=in:st=0:d={min(track.fade_in, duration):.6f}")
    if track.fade_out > 0:
        fade_out = min(track.fade_out, duration)
        steps.append(f"afade=t=out:st={duration - fade_out:.6f}:d={fade_out:.6f}")
    if spec.card_frames:
        steps.append(f"adelay=delays={round(spec.card_frames * AUDIO_RATE / spec.fps)}S:all=1")
    return f"[{audio_input}:a:0]{','.join(steps)}[a]"


def _as_rgb(frame: Frame) -> np.ndarray:
    """An HxWx3 uint8 array for a frame given as a path or an array."""
    if isinstance(frame, np.ndarray):
        if frame.dtype != np.uint8:
            raise RenderError(f"frame arrays must be uint8, not {frame.dtype}")
        if frame.ndim == 3 and frame.shape[2] == 3:
            return np.ascontiguousarray(frame)
        return np.asarray(Image.fromarray(frame).convert("RGB"))
    try:
        with Image.open(frame) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as error:
        raise RenderError(f"cannot read frame {frame}: {error}") from error


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-_STDERR_TAIL_LINES:])


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary imageio-ffmpeg ships; a system ffmpeg is never used."""
    return imageio_ffmpeg.get_ffmpeg_exe()


# --- the content-warning card --------------------------------------------------------------


@lru_cache(maxsize=1)
def _font_bytes() -> bytes:
    return (resources.files("pipeline") / "assets" / _FONT_FILE).read_bytes()


def font(size: int) -> ImageFont.FreeTypeFont:
    """The font the package brings with it (DejaVu Sans Bold), so text looks the same everywhere."""
    return ImageFont.truetype(io.BytesIO(_font_bytes()), size)


def content_warning_card(text: str, size: tuple[int, int]) -> Image.Image:
    """The title card: the warning wrapped and centred in large light type on a dark ground."""
    width, height = size
    image = Image.new("RGB", size, _CARD_BACKGROUND)
    draw = ImageDraw.Draw(image)
    # A twelfth of the width is about 90 px at 1080 wide: readable at a glance on a phone.
    # Long warnings shrink until they fit in the middle 60% of the height.
    font_size = max(12, width // 12)
    while True:
        face = font(font_size)
        lines = _wrap(text, face, int(width * 0.84))
        line_height = round(font_size * 1.3)
        if len(lines) * line_height <= height * 0.6 or font_size <= 12:
            break
        font_size = int(font_size * 0.9)
    top = (height - len(lines) * line_height) / 2
    for number, line in enumerate(lines):
        centre = (width / 2, top + (number + 0.5) * line_height)
        draw.text(centre, line, font=face, fill=_CARD_TEXT, anchor="mm")
    return image


def _wrap(text: str, face: ImageFont.FreeTypeFont, max_width: int) -> list[str]:
    """Greedy word wrap by rendered width; explicit newlines are kept."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if line and face.getlength(candidate) > max_width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


# --- what a render leaves beside the video -------------------------------------------------


def contact_sheet(
    items: Sequence[tuple[Frame, float, str]],
    out: Path,
    tile_width: int = 240,
    columns: int = 4,
) -> Path:
    """One tile per keyframe: its frame, and under it its time and prompt."""
    if not items:
        raise RenderError("a contact sheet needs at least one frame")
    pictures = [Image.fromarray(_as_rgb(frame)) for frame, _, _ in items]
    tile_height = round(tile_width * pictures[0].height / pictures[0].width)
    label_font = font(max(10, tile_width // 16))
    label_lines = 4
    line_height = round(label_font.size * 1.25)
    pad = 8
    cell_w = tile_width + 2 * pad
    cell_h = tile_height + 2 * pad + label_lines * line_height
    columns = min(columns, len(items))
    rows = -(-len(items) // columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), _CARD_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, (picture, (_, time, prompt)) in enumerate(zip(pictures, items, strict=True)):
        x = (index % columns) * cell_w + pad
        y = (index // columns) * cell_h + pad
        sheet.paste(picture.resize((tile_width, tile_height), Image.Resampling.LANCZOS), (x, y))
        lines = [f"{time:.2f}s"] + _wrap(prompt, label_font, tile_width)
        if len(lines) > label_lines:
            last = _ellipsize(lines[label_lines - 1], label_font, tile_width)
            lines = lines[: label_lines - 1] + [last]
        for number, line in enumerate(lines):
            draw.text(
                (x, y + tile_height + 4 + number * line_height),
                line,
                font=label_font,
                fill=_CARD_TEXT,
            )
    atomic_write(out, lambda tmp: sheet.save(tmp, format="PNG"))
    return out


def _ellipsize(line: str, face: ImageFont.FreeTypeFont, max_width: int) -> str:
    """The line cut short with an ellipsis, to say the prompt goes on."""
    while line and face.getlength(line + "…") > max_width:
        line = line[:-1]
    return line + "…"


def preview_gif(
    frames: Sequence[Frame],
    fps: int,
    out: Path,
    gif_fps: float = 8.0,
    width: int = 180,
    max_frames: int = 96,
) -> Path:
    """A small looping GIF of the whole video (a few fps), always under 5 MB.

    Long or busy videos first lose frames (choppier, still in real time), then pixels,
    until the file fits.
    """
    if not frames:
        raise RenderError("a preview needs at least one frame")
    step = max(1, round(fps / gif_fps), -(-len(frames) // max_frames))
    while True:
        pictures = []
        for frame in frames[::step]:
            picture = Image.fromarray(_as_rgb(frame))
            height = round(width * picture.height / picture.width)
            pictures.append(picture.resize((width, height), Image.Resampling.LANCZOS))
        palette = _shared_palette(pictures)
        # No dithering: it costs a third more bytes and looks like noise at this size.
        indexed = [p.quantize(palette=palette, dither=Image.Dither.NONE) for p in pictures]
        buffer = io.BytesIO()
        indexed[0].save(
            buffer,
            "GIF",
            save_all=True,
            append_images=indexed[1:],
            loop=0,
            duration=round(1000 * step / fps),
        )
        if buffer.tell() <= _GIF_MAX_BYTES:
            break
        log.debug(
            "preview of %d frames at width %d is %d bytes: shrinking",
            len(pictures),
            width,
            buffer.tell(),
        )
        if len(pictures) > 24:
            step *= 2
        elif width > 32:
            width = max(32, int(width * 0.75))
        else:
            raise RenderError(f"cannot make a preview GIF under {_GIF_MAX_BYTES} bytes")
    atomic_write(out, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    return out


def _shared_palette(pictures: list[Image.Image], samples: int = 8) -> Image.Image:
    """One median-cut palette for the whole GIF, from a strip of evenly spaced frames.

    Median cut looks far better than Pillow's fast octree but takes ~0.2 s a frame, so it
    runs once on a sample and every frame is mapped onto the result.
    """
    chosen = pictures[:: max(1, len(pictures) // samples)][:samples]
    strip = Image.new("RGB", (sum(p.width for p in chosen), chosen[0].height))
    for index, picture in enumerate(chosen):
        strip.paste(picture, (index * picture.width, 0))
    return strip.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
