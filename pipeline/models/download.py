"""Fetches registry models into the models folder: resumable, hash-checked, never half-written.

Each file streams into `<file>.part` (a later run resumes it with an HTTP Range request), its
SHA-256 is computed on the way and checked against the published one where there is one, and
only then is it renamed into place, with the hash recorded beside it in `<file>.sha256`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from tqdm import tqdm

from pipeline.errors import DiskFullError, ModelError, is_disk_full, size
from pipeline.models.catalogue import Entry, ModelFile, Source, find_entries, unknown_name_error
from pipeline.models.files import (
    entry_paths,
    file_sha256,
    model_paths,
    models_dir,
    record_sha256,
    recorded_sha256,
)
from pipeline.models.tiny import ensure_built
from pipeline.store import free_space

log = logging.getLogger(__name__)

_TIMEOUT = httpx.Timeout(30.0, connect=15.0)


def _by_hand(file: ModelFile, dest: Path) -> str:
    addresses = " or ".join(file.urls)
    return (
        f"You can fetch {addresses} by hand and save it as {dest} (`feverdream models list` "
        f"shows the models folder), then check it with `feverdream models verify {dest}`."
    )


UNREACHABLE = "cannot connect to"
OWN_MODELS = (
    "feverdream's own shapes models need no download: try `--models shapes`, or "
    "storyboards/demo-shapes.yaml (`feverdream examples` copies it out)"
)
# The shapes world has no depth model: offline, the 3D camera's path runs on the tiny one.
NO_DEPTH_MODEL = (
    "`--depth tiny` renders with the tiny depth model instead (random weights: its depth "
    "means nothing)"
)


class _SourceFailed(Exception):
    """One address of a file could not give it; the reason, for the final message."""


def _check_present(file: ModelFile, dest: Path) -> str:
    """A file already in place: check it against the published or recorded hash, and
    record the hash of a file put there by hand."""
    expected = file.sha256 or recorded_sha256(dest)
    actual = file_sha256(dest)
    if expected and actual != expected:
        raise ModelError(
            f"{dest} is already there but its SHA-256 is {actual}, not {expected}: "
            f"delete it and run the download again. {_by_hand(file, dest)}"
        )
    if recorded_sha256(dest) != actual:
        record_sha256(dest, actual)
    return actual


def _total_size(response: httpx.Response, offset: int) -> int | None:
    """The whole file's size, from Content-Range on a partial answer, else Content-Length."""
    content_range = response.headers.get("content-range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("content-length")
    return offset + int(length) if length and length.isdigit() else None


def _is_web_page(head: bytes) -> bool:
    text = head.lstrip()[:200].lower()
    return text.startswith((b"<!doctype html", b"<html", b"<head")) or b"<html" in text


def _content_start(response: httpx.Response) -> int | None:
    """Where a partial answer's bytes start, from `Content-Range: bytes START-END/TOTAL`."""
    unit, _, spans = response.headers.get("content-range", "").partition(" ")
    start = spans.partition("-")[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _stream(
    client: httpx.Client,
    url: str,
    dest: Path,
    part: Path,
    origin: Path,
    on_bytes: Callable[[int, int | None], None] | None,
) -> None:
    """Append the rest of the file at `url` to `part`, resuming from its current size.

    `origin` records the address and the answer's validator (ETag or Last-Modified), which
    a later resume sends as If-Range, so that a file changed on the server since comes back
    whole instead of spliced onto the old part."""
    came_from, validator = _origin(origin)
    if came_from != url:
        validator = None
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            headers["If-Range"] = validator
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 416 and offset:
            # Nothing past what we have: the part may be complete (killed before the rename).
            if _total_size(response, offset) == offset:
                return
            part.unlink()
            raise _SourceFailed(
                f"would not resume from byte {offset}, so the partial file was deleted"
            )
        if response.status_code >= 400:
            raise _SourceFailed(
                f"HTTP {response.status_code} {response.reason_phrase} (the link may be dead "
                "or moved)"
            )
        if response.headers.get("content-type", "").startswith("text/html"):
            raise _SourceFailed(
                "served a web page (HTML), not the file (a login, a confirmation or an error page)"
            )
        if offset and response.status_code == 206 and _content_start(response) != offset:
            log.info("%s answered from another byte than %d: starting again", url, offset)
            offset = 0
            part.unlink()
            origin.unlink(missing_ok=True)
            return _stream(client, url, dest, part, origin, on_bytes)
        if offset and response.status_code != 206:
            log.info("the server sent the whole file, not the rest: starting %s again", dest.name)
            offset = 0
        total = _total_size(response, offset)
        validator = response.headers.get("etag") or response.headers.get("last-modified")
        origin.write_text(f"{url}\n{validator or ''}\n")
        if on_bytes is None:
            bar = tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=None,
            )
            on_bytes = lambda done, total: bar.update(done - bar.n)  # noqa: E731
        else:
            bar = None
        done = offset
        try:
            with open(part, "ab" if offset else "wb") as out:
                for chunk in response.iter_raw():
                    out.write(chunk)
                    done += len(chunk)
                    on_bytes(done, total)
        except OSError as error:
            if not is_disk_full(error):
                raise
            left = total - part.stat().st_size if total is not None else None
            raise DiskFullError(dest.parent, left, free_space(dest.parent), then=(
                "free some space, then run the same command again (it goes on from the "
                f"{size(part.stat().st_size)} downloaded), or set FEVERDREAM_MODELS to a "
                "folder on a disk with room")) from None  # fmt: skip
        finally:
            if bar is not None:
                bar.close()
    if total is not None and part.stat().st_size != total:
        raise _SourceFailed(f"stopped at {part.stat().st_size} of {total} bytes")


def _from(url: str, client: httpx.Client, dest: Path, part: Path, origin: Path, on_bytes) -> None:
    """`_stream`, with the network's failures as this address's reason."""
    host = urlsplit(url).netloc
    try:
        _stream(client, url, dest, part, origin, on_bytes)
    except httpx.ConnectError as error:
        raise _SourceFailed(f"{UNREACHABLE} {host} ({error}): is this machine offline?") from None
    except httpx.TimeoutException:
        raise _SourceFailed(f"{host} stopped answering") from None
    except httpx.HTTPError as error:
        raise _SourceFailed(f"{type(error).__name__}: {error}") from None


def _origin(origin: Path) -> tuple[str | None, str | None]:
    """The address a partial download came from, and its validator, if recorded."""
    if not origin.is_file():
        return None, None
    lines = [*origin.read_text().splitlines(), "", ""]
    return lines[0].strip() or None, lines[1].strip() or None


def fetch(
    file: ModelFile,
    dest: Path,
    client: httpx.Client | None = None,
    on_bytes: Callable[[int, int | None], None] | None = None,
    instead: str = OWN_MODELS,
) -> str:
    """Download one file to `dest` from the first of its addresses that gives it whole
    (resuming `dest.part`); returns its SHA-256. `on_bytes(done, total)` is told how far it
    is (default: a progress bar on a terminal); `instead` is what to try when this machine
    seems to be offline.

    An existing `dest` is checked, not fetched again. A part is resumed from the address it
    came from, tried first. Without a published hash, bytes from two addresses are never
    mixed: a part that stopped part-way is kept for the next run rather than continued from
    another address, and another address starts afresh only when the part's own gives
    nothing. A download with the wrong hash, or a web page where the file should be, is
    deleted and the next address tried. When none gives the file, one ModelError names every
    address with what went wrong, and the way to fetch it by hand.
    """
    dest = Path(dest)
    if dest.is_file():
        return _check_present(file, dest)
    if not file.urls:
        raise ModelError(f"{file.filename} has no address to download it from")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part, origin = Path(f"{dest}.part"), Path(f"{dest}.part.from")
    came_from, _ = _origin(origin)
    if part.exists() and came_from is None:
        came_from = file.url  # a part from before origins were recorded: the main address
        origin.write_text(f"{came_from}\n")
    urls = sorted(file.urls, key=lambda url: url != came_from)
    own_client = client is None
    client = client or httpx.Client(timeout=_TIMEOUT, follow_redirects=True)
    failures: list[tuple[str, str]] = []
    try:
        for number, url in enumerate(urls):
            came_from, _ = _origin(origin)
            if part.exists() and came_from != url and not file.sha256:
                log.info(
                    "the part from %s cannot be checked against %s: starting afresh", came_from, url
                )
                part.unlink()
                origin.unlink()
            size = part.stat().st_size if part.exists() else 0
            try:
                _from(url, client, dest, part, origin, on_bytes)
                actual = _verified(file, part)
            except _SourceFailed as failure:
                failures.append((url, str(failure)))
                grew = part.exists() and part.stat().st_size > size
                if grew and not file.sha256:
                    break  # resume it from the same address next time
                if number + 1 < len(urls):
                    log.warning("%s: %s (trying the next address)", url, failure)
                continue
            os.replace(part, dest)
            origin.unlink(missing_ok=True)
            record_sha256(dest, actual)
            log.info("%s: %s (sha256 %s, from %s)", dest.name, dest, actual, url)
            return actual
    finally:
        if own_client:
            client.close()
    if not part.exists():
        origin.unlink(missing_ok=True)
    raise ModelError(_failed(file, dest, failures, part, origin, instead))


def _verified(file: ModelFile, part: Path) -> str:
    """The downloaded part's SHA-256, if it is the file: the published hash when there is
    one, else not a web page. A part that is not the file is deleted."""
    actual = file_sha256(part)
    if file.sha256 and actual != file.sha256:
        part.unlink()
        raise _SourceFailed(
            f"the file fetched has SHA-256 {actual}, but {file.sha256} was expected; it was "
            "deleted, not kept"
        )
    with open(part, "rb") as head:
        if _is_web_page(head.read(512)):
            part.unlink()
            raise _SourceFailed("served a web page (HTML), not the file; it was deleted")
    return actual


def _failed(
    file: ModelFile,
    dest: Path,
    failures: list[tuple[str, str]],
    part: Path,
    origin: Path,
    instead: str,
) -> str:
    kept = ""
    if part.exists():
        came_from, _ = _origin(origin)
        kept = (
            f"The {part.stat().st_size} bytes fetched so far are kept in {part}: run the same "
            f"command again to resume from {came_from}. "
        )
    if all(reason.startswith(UNREACHABLE) for _, reason in failures):
        # Offline, most likely: one line, each address once (in what to fetch by hand).
        hosts = ", ".join(dict.fromkeys(urlsplit(url).hostname or url for url, _ in failures))
        return (
            f"could not download {file.filename}: none of its {len(failures)} addresses could "
            f"be reached ({hosts}): is this machine offline? {kept}{_by_hand(file, dest)} "
            f"{instead}."
        )
    if len(failures) == 1:
        ((url, reason),) = failures
        return f"{url}: {reason.rstrip('.?')}. {kept}{_by_hand(file, dest)}"
    lines = [f"could not download {file.filename} from the {len(failures)} addresses tried:"]
    lines += [f"  - {url}: {reason}" for url, reason in failures]
    lines.append(kept + _by_hand(file, dest))
    return "\n".join(lines)


def download_entry(
    entry: Entry,
    directory: Path | None = None,
    on_bytes: Callable[[int, int | None], None] | None = None,
) -> list[Path]:
    """Fetch every file of a registry entry into `directory` (default: the models folder)."""
    directory = directory or models_dir()
    paths = []
    instead = NO_DEPTH_MODEL if entry.kind == "depth" else OWN_MODELS
    with httpx.Client(timeout=_TIMEOUT, follow_redirects=True) as client:
        for file in entry.files:
            dest = directory / file.filename
            fetch(file, dest, client, on_bytes, instead)
            paths.append(dest)
    return paths


def download(name: str) -> list[Path]:
    """Fetch the registry model `name` (VQGAN, CLIP or depth model) into the models folder;
    its paths. A model that is not downloaded (built on first use, or shipped in the package)
    is only located."""
    entries = find_entries(name)
    if not entries:
        raise unknown_name_error(name)
    if entries[0].source is not Source.DOWNLOAD:
        ensure_built(*entries)
        return model_paths(name)
    return download_entry(entries[0])


def ensure_downloaded(name: str, on_bytes: Callable[[int, int | None], None] | None = None) -> None:
    """Fetch a registry model a render names, if its files are not in the models folder yet
    (a path, a model that is present, or one that is not downloaded needs nothing)."""
    entries = find_entries(name)
    if not entries or entries[0].source is not Source.DOWNLOAD:
        return
    entry = entries[0]
    if all(path.is_file() for path in entry_paths(entry)):
        return
    log.info("%s is not in %s yet: downloading it once", name, models_dir())
    download_entry(entry, on_bytes=on_bytes)
