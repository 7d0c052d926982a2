"""Fetches registry models into the models folder: resumable, hash-checked, never half-written.

Each file streams into `<file>.part` (a later run resumes it with an HTTP Range request), its
SHA-256 is computed on the way and checked against the published one where there is one, and
only then is it renamed into place, with the hash recorded beside it in `<file>.sha256`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from tqdm import tqdm

from pipeline.errors import ModelError
from pipeline.models.registry import (
    Entry,
    ModelFile,
    Source,
    entry_paths,
    file_sha256,
    find_entry,
    model_paths,
    models_dir,
    record_sha256,
    recorded_sha256,
    unknown_name_error,
)

log = logging.getLogger(__name__)

_TIMEOUT = httpx.Timeout(30.0, connect=15.0)


def _by_hand(file: ModelFile, dest: Path) -> str:
    return f"You can fetch {file.url} by hand and save it as {dest}."


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


def _stream(client: httpx.Client, file: ModelFile, dest: Path, part: Path) -> None:
    """Append the rest of the file to `part`, resuming from its current size."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with client.stream("GET", file.url, headers=headers) as response:
        if response.status_code == 416 and offset:
            # Nothing past what we have: the part may be complete (killed before the rename).
            if _total_size(response, offset) == offset:
                return
            part.unlink()
            raise ModelError(
                f"the server would not resume {file.url} from byte {offset}; the partial file "
                "was deleted: run the download again to start over."
            )
        if response.status_code >= 400:
            raise ModelError(
                f"{file.url} answered HTTP {response.status_code} {response.reason_phrase}: "
                f"the link may be dead or moved. {_by_hand(file, dest)}"
            )
        if offset and response.status_code != 206:
            log.info("the server does not resume downloads: starting %s again", dest.name)
            offset = 0
        total = _total_size(response, offset)
        mode = "ab" if offset else "wb"
        with (
            open(part, mode) as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=None,
            ) as bar,
        ):
            for chunk in response.iter_raw():
                out.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise ModelError(
            f"the download of {file.url} stopped at {part.stat().st_size} of {total} bytes; "
            "run the same command again to resume it."
        )


def fetch(file: ModelFile, dest: Path, client: httpx.Client | None = None) -> str:
    """Download one file to `dest` (resuming `dest.part`); returns its SHA-256.

    An existing `dest` is checked, not fetched again. A hash mismatch deletes the download.
    """
    dest = Path(dest)
    if dest.is_file():
        return _check_present(file, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = Path(f"{dest}.part")
    host = urlsplit(file.url).netloc
    own_client = client is None
    client = client or httpx.Client(timeout=_TIMEOUT, follow_redirects=True)
    try:
        _stream(client, file, dest, part)
    except httpx.ConnectError as error:
        raise ModelError(
            f"cannot connect to {host} to fetch {file.url} ({error}): is this machine offline? "
            f"{_by_hand(file, dest)}"
        ) from error
    except httpx.TimeoutException as error:
        raise ModelError(
            f"{host} stopped answering while fetching {file.url}; run the same command again "
            f"to resume. {_by_hand(file, dest)}"
        ) from error
    except httpx.HTTPError as error:
        raise ModelError(
            f"the download of {file.url} failed ({type(error).__name__}: {error}); run the same "
            f"command again to resume. {_by_hand(file, dest)}"
        ) from error
    finally:
        if own_client:
            client.close()
    actual = file_sha256(part)
    if file.sha256 and actual != file.sha256:
        part.unlink()
        raise ModelError(
            f"the file fetched from {file.url} has SHA-256 {actual}, but {file.sha256} was "
            f"expected; it was deleted, not kept. Try again later. {_by_hand(file, dest)}"
        )
    os.replace(part, dest)
    record_sha256(dest, actual)
    log.info("%s: %s (sha256 %s)", dest.name, dest, actual)
    return actual


def download_entry(entry: Entry, directory: Path | None = None) -> list[Path]:
    """Fetch every file of a registry entry into `directory` (default: the models folder)."""
    directory = directory or models_dir()
    paths = []
    with httpx.Client(timeout=_TIMEOUT, follow_redirects=True) as client:
        for file in entry.files:
            dest = directory / file.filename
            fetch(file, dest, client)
            paths.append(dest)
    return paths


def download(name: str) -> list[Path]:
    """Fetch the registry model `name` (VQGAN or CLIP) into the models folder; its paths. A
    model that is not downloaded (built on first use, or shipped in the package) is only
    located."""
    entries = [e for e in (find_entry("vqgan", name), find_entry("clip", name)) if e]
    if not entries:
        raise unknown_name_error(name)
    if entries[0].source is not Source.DOWNLOAD:
        return model_paths(name)
    return download_entry(entries[0])


def ensure_downloaded(name: str) -> None:
    """Fetch a registry model a render names, if its files are not in the models folder yet
    (a path, a model that is present, or one that is not downloaded needs nothing)."""
    entry = find_entry("vqgan", name) or find_entry("clip", name)
    if entry is None or entry.source is not Source.DOWNLOAD:
        return
    if all(path.is_file() for path in entry_paths(entry)):
        return
    log.info("%s is not in %s yet: downloading it once", name, models_dir())
    download_entry(entry)
