"""Moving the video's bytes to TikTok: the chunk plan TikTok accepts, chunks streamed from disk
with Content-Range, and polling the post's status until it settles."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import stamina

from pipeline.errors import FeverdreamError
from pipeline.tiktok.client import PublishStatus, TikTokClient, retries
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


class _ChunkFailed(TikTokError):
    """A chunk TikTok failed on (5xx, 429): worth sending again."""


def upload_file(
    http: httpx.Client,
    upload_url: str,
    path: Path,
    plan: ChunkPlan,
    *,
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
        try:
            failed = (httpx.TransportError, _ChunkFailed)
            for attempt in retries(failed, CHUNK_ATTEMPTS, CHUNK_BACKOFF_S):
                with attempt:
                    if attempt.num > 1:
                        log.warning("chunk %d/%d: sending it again", index + 1, plan.count)
                    _put_chunk(http, upload_url, _read_range(path, first, last), headers)
        except httpx.TransportError as error:
            raise unreachable("TikTok's upload server", error) from None
        if on_progress:
            on_progress(last - first + 1)


def _put_chunk(http: httpx.Client, upload_url: str, content: Iterator[bytes], headers) -> None:
    """One PUT of one chunk; what TikTok answered, as an error unless it took the chunk."""
    response = http.put(upload_url, content=content, headers=headers, timeout=CHUNK_TIMEOUT)
    status = response.status_code
    if status in (200, 201, 206):
        return
    if status in (403, 404, 416):
        raise UploadRejected(f"upload_http_{status}", response.text[:200], status=status)
    if status >= 500 or status == 429:
        log.warning("TikTok's upload server answered HTTP %d", status)
        raise _ChunkFailed(f"upload_http_{status}", response.text[:200], status=status)
    raise TikTokError(f"upload_http_{status}", response.text[:200], status=status)


class _StillProcessing(Exception):
    """The post has not settled yet: poll again."""


def _passing(error: Exception) -> bool:
    """A refusal of a status check that passes: the rate limit, or TikTok's own fault."""
    return isinstance(error, TikTokError) and (
        error.code in ("rate_limit_exceeded", "internal_error") or (error.status or 0) >= 500
    )


def _poll_again(error: Exception) -> bool:
    """Whether to ask for the status again: still processing, or a refusal that passes."""
    if _passing(error):
        log.warning("status check failed (%s); waiting longer", getattr(error, "code", ""))
        return True
    return isinstance(error, _StillProcessing)


def wait_for_status(
    client: TikTokClient,
    publish_id: str,
    mode: str,
    *,
    on_change: Callable[[PublishStatus], None] | None = None,
) -> PublishStatus:
    """Poll until the post succeeds (`SEND_TO_USER_INBOX` ends a draft: publishing it is the
    user's move in the app) or fails; an unknown status counts as still processing."""
    seen = ""
    try:
        for attempt in stamina.retry_context(
            on=_poll_again,
            attempts=None,
            timeout=POLL_DEADLINE_S,
            wait_initial=POLL_FIRST_S,
            wait_max=POLL_MAX_S,
            wait_exp_base=1.5,
            wait_jitter=0,
        ):
            with attempt:
                status = client.fetch_status(publish_id)
                if status.status != seen and on_change:
                    on_change(status)
                seen = status.status
                if status.status not in SUCCESS_STATES[mode] and status.status != "FAILED":
                    raise _StillProcessing(seen)
                return status
    except (_StillProcessing, TikTokError) as error:
        if isinstance(error, TikTokError) and not _passing(error):
            raise
        raise FeverdreamError(
            f"TikTok is still processing the video ({seen or 'no status yet'}) after "
            f"{POLL_DEADLINE_S / 60:.0f} minutes: check later with "
            f"`feverdream tiktok status {publish_id}`"
        ) from None
    raise AssertionError("stamina ends a retry by returning or raising")
