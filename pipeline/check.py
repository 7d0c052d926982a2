"""Probes a video file and says whether TikTok accepts it for upload, and what to change if not."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from pipeline.errors import VideoFileError

# TikTok's rules for uploaded videos (TIKTOK_API.md section 8).
CONTAINERS = ("mp4", "mov", "webm")
VIDEO_CODECS = ("h264", "hevc", "vp8", "vp9")
MIN_FPS, MAX_FPS = 23, 60
MIN_SIDE, MAX_SIDE = 360, 4096
MAX_DURATION_S = 600.0
MAX_FILE_BYTES = 4 * 1024**3

_CODEC_NAMES = {"h264": "H.264", "hevc": "H.265", "vp8": "VP8", "vp9": "VP9"}
# Rates within this of a limit count as on it (23.976 passes 23; rounding in the timestamps).
_FPS_TOLERANCE = 0.01


@dataclass(frozen=True)
class AudioInfo:
    """The first audio stream."""

    codec: str
    profile: str | None
    channels: int
    sample_rate: int
    duration: float


@dataclass(frozen=True)
class VideoInfo:
    """What TikTok's checks look at, read from the file itself."""

    path: Path
    container: str  # "mp4", "mov", "webm", "matroska", or FFmpeg's name for another format
    size_bytes: int
    duration: float  # seconds, the longest stream
    video_codec: str  # FFmpeg's name: "h264", "hevc", "vp9", ...
    profile: str | None
    pix_fmt: str | None
    width: int
    height: int
    fps: float
    constant_frame_rate: bool
    frame_count: int
    audio: AudioInfo | None
    moov_before_mdat: bool | None  # None for files that are not MP4/MOV

    def summary(self) -> str:
        """A few lines for people: what the file is."""
        video = f"{self.video_codec}" + (f" ({self.profile})" if self.profile else "")
        rate = "constant" if self.constant_frame_rate else "variable"
        lines = [
            f"{self.path}",
            f"  container  {self.container}, {self.size_bytes / 1e6:.1f} MB, {self.duration:.2f} s",
            f"  video      {video}, {self.pix_fmt}, {self.width}x{self.height}, "
            f"{self.fps:.3f} fps ({rate}), {self.frame_count} frames",
        ]
        if self.audio is None:
            lines.append("  audio      none")
        else:
            audio = self.audio
            codec = audio.codec + (f" ({audio.profile})" if audio.profile else "")
            lines.append(
                f"  audio      {codec}, {audio.channels} channels, {audio.sample_rate} Hz, "
                f"{audio.duration:.2f} s"
            )
        if self.moov_before_mdat is not None:
            where = "at the start (fast start)" if self.moov_before_mdat else "at the end"
            lines.append(f"  index      {where}")
        return "\n".join(lines)


def probe_video(path: Path) -> VideoInfo:
    """Read a video's container, streams and frame timestamps with PyAV (its own FFmpeg)."""
    path = Path(path)
    if not path.is_file():
        raise VideoFileError(f"{path} does not exist")
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise VideoFileError(f"{path} cannot be read as a video: {error}") from error
    with container:
        if not container.streams.video:
            raise VideoFileError(f"{path} has no video stream")
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        video_pts: list[int] = []
        audio_span: list[int] = []
        try:
            # Demuxing without decoding: timestamps are all the frame-rate check needs.
            for packet in container.demux([s for s in (video, audio) if s is not None]):
                if packet.pts is None:
                    continue
                if packet.stream.index == video.index:
                    video_pts.append(packet.pts)
                else:
                    audio_span += [packet.pts, packet.pts + (packet.duration or 0)]
        except av.FFmpegError as error:
            raise VideoFileError(f"{path} is damaged: {error}") from error
        if not video_pts:
            raise VideoFileError(f"{path} has a video stream with no frames")
        fps, constant = _frame_rate(sorted(video_pts), video)
        video_duration = _seconds(video.duration, video.time_base)
        if video_duration is None:
            video_duration = len(video_pts) / fps if fps else 0.0
        audio_info = None if audio is None else _audio_info(audio, audio_span)
        container_duration = (container.duration or 0) / av.time_base
        context = video.codec_context
        kind = _container_kind(path, container.format.name)
        return VideoInfo(
            path=path,
            container=kind,
            size_bytes=path.stat().st_size,
            duration=max(container_duration, video_duration),
            video_codec=context.name,
            profile=context.profile,
            pix_fmt=context.pix_fmt,
            width=context.width,
            height=context.height,
            fps=fps,
            constant_frame_rate=constant,
            frame_count=len(video_pts),
            audio=audio_info,
            moov_before_mdat=_moov_before_mdat(path) if kind in ("mp4", "mov") else None,
        )


@dataclass(frozen=True)
class Checked:
    """What `checked` found: the file's summary, and what TikTok would reject (empty: none)."""

    summary: str
    problems: list[str]

    @property
    def accepted(self) -> bool:
        return not self.problems


def checked(path: Path, max_duration_s: float | None = None) -> Checked:
    """Would TikTok accept this video file? Its summary, and what to change if not."""
    info = probe_video(path)
    return Checked(info.summary(), find_problems(info, max_duration_s))


def check_video(path: Path, max_duration_s: float | None = None) -> list[str]:
    """TikTok's objections to the file, each saying what to change; empty when it is accepted.

    `max_duration_s` is the account's own limit (creator_info's max_video_post_duration_sec).
    """
    return checked(path, max_duration_s).problems


def find_problems(info: VideoInfo, max_duration_s: float | None = None) -> list[str]:
    """The rules of TIKTOK_API.md section 8 applied to a probed file."""
    problems = []
    if info.container not in CONTAINERS:
        problems.append(
            f"the container is {info.container}; TikTok takes MP4, MOV or WebM: re-mux it, e.g. "
            "`ffmpeg -i IN -c copy -movflags +faststart OUT.mp4`"
        )
    if info.video_codec not in VIDEO_CODECS:
        problems.append(
            f"the video codec is {info.video_codec}; TikTok takes H.264, H.265, VP8 or VP9: "
            "re-encode it with `-c:v libx264 -profile:v high -pix_fmt yuv420p`"
        )
    if not info.constant_frame_rate:
        problems.append(
            "the frame rate is variable; TikTok needs a constant one: re-encode it with "
            "`-fps_mode cfr -r 30`"
        )
    if not MIN_FPS - _FPS_TOLERANCE <= info.fps <= MAX_FPS + _FPS_TOLERANCE:
        problems.append(
            f"the frame rate is {info.fps:.3g} fps; TikTok needs {MIN_FPS}-{MAX_FPS}: render at "
            "24 or 30 (the storyboard's `fps:`) or re-encode with `-r 30`"
        )
    for side, pixels in (("width", info.width), ("height", info.height)):
        if not MIN_SIDE <= pixels <= MAX_SIDE:
            problems.append(
                f"the {side} is {pixels} px; TikTok needs each side between {MIN_SIDE} and "
                f"{MAX_SIDE}: render at `size: 1080x1920` or scale it with "
                "`-vf scale=1080:1920`"
            )
    if info.duration > MAX_DURATION_S:
        problems.append(
            f"it is {info.duration:.1f} s long; TikTok's API takes at most "
            f"{MAX_DURATION_S:g} s: shorten the storyboard's `duration:` or cut it with "
            f"`-t {MAX_DURATION_S:g}`"
        )
    if max_duration_s is not None and info.duration > max_duration_s:
        problems.append(
            f"it is {info.duration:.1f} s long; this account may post at most "
            f"{max_duration_s:g} s: shorten the storyboard's `duration:` or cut it with "
            f"`-t {max_duration_s:g}`"
        )
    if info.size_bytes > MAX_FILE_BYTES:
        problems.append(
            f"the file is {info.size_bytes / 1024**3:.2f} GiB; TikTok takes at most 4 GiB: "
            "raise the CRF (e.g. `-crf 23`) or make it shorter"
        )
    return problems


def _frame_rate(pts: list[int], stream: av.video.stream.VideoStream) -> tuple[float, bool]:
    """Average frames per second and whether every frame lasts as long as the others."""
    if len(pts) < 2:
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        return float(rate or 0), True
    steps = [later - earlier for earlier, later in zip(pts, pts[1:], strict=False)]
    # One tick of slack: a millisecond time base (WebM) cannot hold 1/24 s exactly.
    constant = max(steps) - min(steps) <= 1
    span = (pts[-1] - pts[0]) * stream.time_base
    return float((len(pts) - 1) / span), constant


def _audio_info(stream: av.audio.stream.AudioStream, span: list[int]) -> AudioInfo:
    # The stream's own duration honours the MP4 edit list (AAC priming); packets are the
    # fallback for containers that do not record one.
    duration = _seconds(stream.duration, stream.time_base)
    if duration is None:
        duration = float((max(span) - max(min(span), 0)) * stream.time_base) if span else 0.0
    context = stream.codec_context
    return AudioInfo(
        codec=context.name,
        profile=context.profile,
        channels=context.channels,
        sample_rate=context.sample_rate,
        duration=duration,
    )


def _seconds(ticks: int | None, time_base: Fraction | None) -> float | None:
    if ticks is None or time_base is None:
        return None
    return float(ticks * time_base)


def _container_kind(path: Path, format_name: str) -> str:
    """MP4 and MOV share FFmpeg's demuxer, as WebM and Matroska do: the header tells them apart."""
    with path.open("rb") as file:
        head = file.read(64)
    if format_name.startswith("mov,mp4"):
        # The ftyp box's major brand: "qt  " is QuickTime; no ftyp at all is old QuickTime.
        if head[4:8] != b"ftyp":
            return "mov"
        return "mov" if head[8:12] == b"qt  " else "mp4"
    if format_name.startswith("matroska"):
        return "webm" if b"webm" in head else "matroska"
    return format_name.split(",")[0]


def _moov_before_mdat(path: Path) -> bool | None:
    """Walk the top-level MP4 boxes: is the index (moov) ahead of the media (mdat)?"""
    size = path.stat().st_size
    with path.open("rb") as file:
        offset = 0
        while offset + 8 <= size:
            file.seek(offset)
            box_size, kind = struct.unpack(">I4s", file.read(8))
            if box_size == 1:  # a 64-bit size follows the type
                (box_size,) = struct.unpack(">Q", file.read(8))
            elif box_size == 0:  # the box runs to the end of the file
                box_size = size - offset
            if kind == b"moov":
                return True
            if kind == b"mdat":
                return False
            if box_size < 8:
                break
            offset += box_size
    return None
