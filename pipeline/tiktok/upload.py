"""Moving the video's bytes to TikTok: the chunk plan TikTok accepts, chunks streamed from disk
with Content-Range, and polling the post's status until it settles."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from pipeline.errors import FeverdreamError
from pipeline.tiktok.client import PublishStatus, TikTokClient
from pipeline.tiktok.errors import TikTokError, unreachable

log = logging.getLogger(__name__)

# TikTok's "5 MB" and "64 MB" may be decimal or binary (it never said), so stay inside both
# readings; since August 2026 a single chunk over 64 MB is refused.
MIN_CHUNK = 5 * 1024 * 1024
MAX_CHUNK = 64_000_000
DEFAULT_CHUNK = 10_000_000
MAX_VIDEO_BYTES = 4 * 1024**3
READ_BLOCK = 1024 * 1024

CONTENT_TYPES = {".mp4": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm"}
CHUNK_ATTEMPTS = 4
CHUNK_BACKOFF_S = 1.0
CHUNK_TIMEOUT = httpx.Timeout(600.0, connect=30.0)

SUCCESS_STATES = {
    "draft": {"SEND_TO_USER_INBOX", "PUBLISH_COMPLETE"},
    "direct": {"PUBLISH_COMPLETE"},
}
# Status fetch allows 30 calls a minute: start at 5 s, slow to 15 s, give up after 15 minutes.
POLL_FIRST_S = 5.0
POLL_MAX_S = 15.0
POLL_DEADLINE_S = 15 * 60.0


@dataclass(frozen=True)
class ChunkPlan:
    """FILE_UPLOAD's source_info: chunk count is the floor, the last chunk takes the rest."""

    video_size: int
    chunk_size: int
    count: int

    def ranges(self) -> Iterator[tuple[int, int]]:
        """Each chunk's first and last byte, inclusive, as Content-Range wants them."""
        for index in range(self.count):
            first = index * self.chunk_size
            last = self.video_size - 1 if index == self.count - 1 else first + self.chunk_size - 1
            yield first, last

    def source_info(self) -> dict:
        return {
            "source": "FILE_UPLOAD",
            "video_size": self.video_size,
            "chunk_size": self.chunk_size,
            "total_chunk_count": self.count,
        }


def plan_chunks(video_size: int, preferred: int = DEFAULT_CHUNK) -> ChunkPlan:
    """The chunk plan TikTok accepts: one chunk of the whole file up to 64,000,000 bytes, else
    `preferred`-sized chunks with the remainder merged into the last (never ceil: TikTok
    answers "The total chunk count is invalid")."""
    if video_size <= 0:
        raise ValueError("the video is empty")
    if video_size > MAX_VIDEO_BYTES:
        raise ValueError("TikTok takes videos of at most 4 GB")
    if video_size <= MAX_CHUNK:
        return ChunkPlan(video_size, video_size, 1)
    chunk = min(max(preferred, MIN_CHUNK), MAX_CHUNK)
    # 4 GB / 5 MiB is 819 chunks, so the count stays within TikTok's 1000.
    return ChunkPlan(video_size, chunk, video_size // chunk)


class UploadRejected(TikTokError):
    """The upload URL is no use any more (expired, unknown, or out of step): start over with a
    new init, as TikTok offers no way to resume."""


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower(), "video/mp4")


def _read_range(path: Path, first: int, last: int) -> Iterator[bytes]:
    """The bytes first..last of the file, a block at a time, so no chunk sits in memory whole."""
    with path.open("rb") as file:
        file.seek(first)
        left = last - first + 1
        while left:
            block = file.read(min(READ_BLOCK, left))
            if not block:
                raise OSError(f"{path} shrank while it was uploading")
            left -= len(block)
            yield block


def upload_file(
    http: httpx.Client,
    upload_url: str,
    path: Path,
    plan: ChunkPlan,
    *,
    time_scale: float = 1.0,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """PUT the file's chunks to `upload_url` (used verbatim) in order; a chunk TikTok fails on
    (5xx, 429, or a dropped connection) is sent again after a pause, since TikTok overwrites
    a repeated range."""
    mime = content_type(path)
    for index, (first, last) in enumerate(plan.ranges()):
        headers = {
            "Content-Type": mime,
            "Content-Length": str(last - first + 1),
            "Content-Range": f"bytes {first}-{last}/{plan.video_size}",
        }
        for attempt in range(CHUNK_ATTEMPTS):
            final = attempt == CHUNK_ATTEMPTS - 1
            try:
                response = http.put(
                    upload_url,
                    content=_read_range(path, first, last),
                    headers=headers,
                    timeout=CHUNK_TIMEOUT,
                )
            except httpx.TransportError as error:
                if final:
                    raise unreachable("TikTok's upload server", error) from None
                log.warning("chunk %d/%d: %s; sending it again", index + 1, plan.count, error)
            else:
                status = response.status_code
                if status in (200, 201, 206):
                    break
                if status in (403, 404, 416):
                    raise UploadRejected(
                        f"upload_http_{status}", response.text[:200], status=status
                    )
                if not (status >= 500 or status == 429) or final:
                    raise TikTokError(f"upload_http_{status}", response.text[:200], status=status)
                log.warning("chunk %d/%d: HTTP %d; sending it again", index + 1, plan.count, status)
            time.sleep(CHUNK_BACKOFF_S * 2**attempt * time_scale)
        if on_progress:
            on_progress(last - first + 1)


def wait_for_status(
    client: TikTokClient,
    publish_id: str,
    mode: str,
    *,
    on_change: Callable[[PublishStatus], None] | None = None,
) -> PublishStatus:
    """Poll until the post succeeds (`SEND_TO_USER_INBOX` ends a draft: publishing it is the
    user's move in the app) or fails; an unknown status counts as still processing."""
    scale = client.time_scale
    deadline = time.monotonic() + POLL_DEADLINE_S * scale
    delay = POLL_FIRST_S
    seen = ""
    while True:
        time.sleep(delay * scale)
        try:
            status = client.fetch_status(publish_id)
        except TikTokError as error:
            if error.code not in ("rate_limit_exceeded", "internal_error") and not (
                error.status and error.status >= 500
            ):
                raise
            log.warning("status check failed (%s); waiting longer", error.code)
            status = None
        if status is not None:
            if status.status != seen and on_change:
                on_change(status)
            seen = status.status
            if status.status in SUCCESS_STATES[mode] or status.status == "FAILED":
                return status
        if time.monotonic() > deadline:
            raise FeverdreamError(
                f"TikTok is still processing the video ({seen or 'no status yet'}) after "
                f"{POLL_DEADLINE_S / 60:.0f} minutes: check later with "
                f"`feverdream tiktok status {publish_id}`"
            )
        delay = min(delay * 1.5, POLL_MAX_S)
