"""Downloads against a local HTTP server: whole, resumed, dead links, bad hashes, offline."""

from __future__ import annotations

import hashlib
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from small_disk import on_a_small_disk

from pipeline.cli import main
from pipeline.errors import ModelError
from pipeline.models.catalogue import CLIPS, DEPTHS, VQGANS, ModelFile, Source, VQGANEntry
from pipeline.models.download import download, fetch
from pipeline.models.files import models_dir, recorded_sha256, resolve_vqgan

DATA = bytes(range(256)) * 400  # 100 KiB, so that reads come in several chunks
SHA = hashlib.sha256(DATA).hexdigest()


@dataclass
class FileServer:
    """What the test server serves and what it was asked."""

    files: dict[str, bytes]
    honour_range: bool = True
    break_after: dict[str, int] = field(default_factory=dict)  # path -> bytes, once
    content_types: dict[str, str] = field(default_factory=dict)  # path -> Content-Type
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    if_ranges: list[str | None] = field(default_factory=list)  # each request's If-Range
    range_start_off_by: int = 0  # a broken server: partial answers start elsewhere
    base: str = ""

    def url(self, path: str) -> str:
        return self.base + path


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        state = self.server.state  # type: ignore[attr-defined]
        state.requests.append((self.path, self.headers.get("Range")))
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        state.if_ranges.append(self.headers.get("If-Range"))
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        start = 0
        wanted = self.headers.get("Range")
        if self.headers.get("If-Range") not in (None, etag):
            wanted = None  # the file changed since the part was fetched: send it whole
        if wanted and state.honour_range:
            start = int(wanted.removeprefix("bytes=").split("-")[0]) + state.range_start_off_by
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("ETag", etag)
        if self.path in state.content_types:
            self.send_header("Content-Type", state.content_types[self.path])
        self.end_headers()
        cut = state.break_after.pop(self.path, None)
        # A connection that drops part-way: promise everything, send some, hang up.
        self.wfile.write(body[start:cut] if cut is not None else body[start:])
        if cut is not None:
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[FileServer]:
    state = FileServer(files={"/model.ckpt": DATA, "/model.yaml": b"model: {}\n"})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = state  # type: ignore[attr-defined]
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_a_whole_download_is_verified_renamed_and_recorded(server, tmp_path):
    dest = tmp_path / "model.ckpt"
    assert fetch(ModelFile("model.ckpt", server.url("/model.ckpt"), sha256=SHA), dest) == SHA
    assert dest.read_bytes() == DATA
    assert not Path(f"{dest}.part").exists()
    assert recorded_sha256(dest) == SHA
    # Present and recorded: checked, not fetched again.
    fetch(ModelFile("model.ckpt", server.url("/model.ckpt")), dest)
    assert len(server.requests) == 1


def test_a_partial_download_resumes_with_a_range_request(server, tmp_path):
    dest = tmp_path / "model.ckpt"
    Path(f"{dest}.part").write_bytes(DATA[:30_000])
    fetch(ModelFile("model.ckpt", server.url("/model.ckpt"), sha256=SHA), dest)
    assert server.requests == [("/model.ckpt", "bytes=30000-")]
    assert dest.read_bytes() == DATA


def test_a_dropped_connection_keeps_the_part_and_the_next_run_resumes(server, tmp_path):
    dest = tmp_path / "model.ckpt"
    server.break_after["/model.ckpt"] = 40_000
    file = ModelFile("model.ckpt", server.url("/model.ckpt"))
    with pytest.raises(ModelError, match="run the same command again to resume"):
        fetch(file, dest)
    assert not dest.exists()
    kept = Path(f"{dest}.part").stat().st_size
    assert 0 < kept <= 40_000
    fetch(file, dest)
    assert server.requests[-1] == ("/model.ckpt", f"bytes={kept}-")
    assert dest.read_bytes() == DATA
    assert recorded_sha256(dest) == SHA


def test_a_server_that_ignores_ranges_gets_a_fresh_start(server, tmp_path):
    server.honour_range = False
    dest = tmp_path / "model.ckpt"
    Path(f"{dest}.part").write_bytes(b"x" * 1000)
    fetch(ModelFile("model.ckpt", server.url("/model.ckpt"), sha256=SHA), dest)
    assert dest.read_bytes() == DATA


def test_a_complete_part_left_before_the_rename_is_finished(server, tmp_path):
    dest = tmp_path / "model.ckpt"
    Path(f"{dest}.part").write_bytes(DATA)
    fetch(ModelFile("model.ckpt", server.url("/model.ckpt"), sha256=SHA), dest)
    assert dest.read_bytes() == DATA


def test_a_dead_link_names_the_url_and_where_to_put_the_file(server, tmp_path):
    dest = tmp_path / "gone.ckpt"
    url = server.url("/gone.ckpt")
    with pytest.raises(ModelError, match="HTTP 404") as caught:
        fetch(ModelFile("gone.ckpt", url), dest)
    assert url in str(caught.value) and f"save it as {dest}" in str(caught.value)
    assert not dest.exists()


def test_a_wrong_hash_is_not_kept(server, tmp_path):
    dest = tmp_path / "model.ckpt"
    with pytest.raises(ModelError, match=f"has SHA-256 {SHA}, but {'0' * 64} was expected"):
        fetch(ModelFile("model.ckpt", server.url("/model.ckpt"), sha256="0" * 64), dest)
    assert not dest.exists() and not Path(f"{dest}.part").exists()
    assert not Path(f"{dest}.sha256").exists()


def test_a_file_that_changed_since_its_download_is_refused(server, tmp_path):
    dest = tmp_path / "model.ckpt"
    file = ModelFile("model.ckpt", server.url("/model.ckpt"))
    fetch(file, dest)
    dest.write_bytes(DATA[:-1] + b"!")
    with pytest.raises(ModelError, match="already there but its SHA-256"):
        fetch(file, dest)


def test_offline_says_so(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/model.ckpt"
    dest = tmp_path / "model.ckpt"
    with pytest.raises(ModelError, match="offline") as caught:
        fetch(ModelFile("model.ckpt", url), dest)
    assert url in str(caught.value) and str(dest) in str(caught.value)


def test_offline_with_mirrors_is_one_message_naming_each_address_once(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    urls = [f"http://127.0.0.1:{port}/{name}/model.ckpt" for name in ("a", "b", "c")]
    with pytest.raises(ModelError) as caught:
        fetch(ModelFile("model.ckpt", urls[0], mirrors=tuple(urls[1:])), tmp_path / "model.ckpt")
    message = str(caught.value)
    assert "none of its 3 addresses could be reached" in message and "offline?" in message
    assert all(message.count(url) == 1 for url in urls), message
    assert "--models shapes" in message and "\n" not in message


# --- mirrors ---------------------------------------------------------------------------------

PAGE = b"<!DOCTYPE html><html><body>Please confirm the download</body></html>"


def mirrored(server: FileServer, *paths: str, sha256: str | None = SHA) -> ModelFile:
    url, *mirrors = (server.url(path) for path in paths)
    return ModelFile("model.ckpt", url, sha256=sha256, mirrors=tuple(mirrors))


def test_a_dead_first_address_falls_through_to_a_mirror(server, tmp_path):
    dest = tmp_path / "model.ckpt"
    assert fetch(mirrored(server, "/gone.ckpt", "/model.ckpt"), dest) == SHA
    assert dest.read_bytes() == DATA
    assert [path for path, _ in server.requests] == ["/gone.ckpt", "/model.ckpt"]


def test_a_mirror_serving_a_web_page_is_skipped(server, tmp_path):
    # A 200 answer that is an HTML page: by its Content-Type, or, without one, by its bytes
    # (when no hash is published to catch it).
    server.files["/page.ckpt"] = PAGE
    server.files["/typed.ckpt"] = PAGE
    server.content_types["/typed.ckpt"] = "text/html; charset=utf-8"
    dest = tmp_path / "model.ckpt"
    fetch(mirrored(server, "/typed.ckpt", "/page.ckpt", "/model.ckpt", sha256=None), dest)
    assert dest.read_bytes() == DATA
    assert not Path(f"{dest}.part").exists() and not Path(f"{dest}.part.from").exists()


def test_a_truncated_or_wrong_file_from_one_mirror_is_fetched_from_the_next(server, tmp_path):
    server.files["/other.ckpt"] = DATA[::-1]
    server.files["/model-b.ckpt"] = DATA
    server.break_after["/model.ckpt"] = 10_000
    dest = tmp_path / "model.ckpt"
    fetch(mirrored(server, "/other.ckpt", "/model.ckpt", "/model-b.ckpt"), dest)
    assert dest.read_bytes() == DATA
    # The wrong file was deleted; the cut-short one was resumed from the next mirror, which
    # the published hash makes safe.
    assert server.requests[-1] == ("/model-b.ckpt", "bytes=10000-")


def test_without_a_hash_a_part_is_kept_and_resumed_from_where_it_came(server, tmp_path):
    # No published hash: bytes from two addresses must never be mixed, so a part cut short
    # is not continued from the mirror but kept, and the next run resumes it from its own.
    server.files["/model-b.ckpt"] = DATA
    server.break_after["/model.ckpt"] = 10_000
    dest = tmp_path / "model.ckpt"
    file = mirrored(server, "/model.ckpt", "/model-b.ckpt", sha256=None)
    with pytest.raises(ModelError, match="kept in .*run the same command again to resume from"):
        fetch(file, dest)
    kept = Path(f"{dest}.part").stat().st_size
    assert 0 < kept <= 10_000 and [p for p, _ in server.requests] == ["/model.ckpt"]
    fetch(file, dest)
    assert server.requests[-1] == ("/model.ckpt", f"bytes={kept}-")
    assert dest.read_bytes() == DATA


def test_a_part_from_a_mirror_resumes_from_that_mirror_first(server, tmp_path):
    server.files["/model-b.ckpt"] = DATA
    server.break_after["/model-b.ckpt"] = 20_000
    dest = tmp_path / "model.ckpt"
    file = mirrored(server, "/down.ckpt", "/model-b.ckpt", sha256=None)
    with pytest.raises(ModelError, match="resume from .*/model-b.ckpt"):
        fetch(file, dest)
    kept = Path(f"{dest}.part").stat().st_size
    server.files["/down.ckpt"] = DATA  # the main address is back: the part still goes on
    fetch(file, dest)  # from the mirror it came from
    assert server.requests[-1] == ("/model-b.ckpt", f"bytes={kept}-")
    assert dest.read_bytes() == DATA


def test_a_part_whose_own_address_is_gone_starts_afresh_from_the_next(server, tmp_path):
    server.files["/model-b.ckpt"] = DATA
    server.break_after["/model.ckpt"] = 10_000
    dest = tmp_path / "model.ckpt"
    file = mirrored(server, "/model.ckpt", "/model-b.ckpt", sha256=None)
    with pytest.raises(ModelError):
        fetch(file, dest)
    del server.files["/model.ckpt"]
    fetch(file, dest)
    assert server.requests[-1] == ("/model-b.ckpt", None)
    assert dest.read_bytes() == DATA


def test_a_resume_answered_from_another_byte_starts_over(server, tmp_path):
    server.range_start_off_by = 1000
    dest = tmp_path / "model.ckpt"
    Path(f"{dest}.part").write_bytes(DATA[:30_000])
    fetch(ModelFile("model.ckpt", server.url("/model.ckpt")), dest)
    assert dest.read_bytes() == DATA
    assert server.requests[-1] == ("/model.ckpt", None)


def test_a_file_changed_on_the_server_comes_back_whole_not_spliced(server, tmp_path):
    server.break_after["/model.ckpt"] = 40_000
    dest = tmp_path / "model.ckpt"
    file = ModelFile("model.ckpt", server.url("/model.ckpt"))
    with pytest.raises(ModelError):
        fetch(file, dest)
    server.files["/model.ckpt"] = DATA[::-1]  # re-uploaded between the two runs
    fetch(file, dest)
    assert server.if_ranges[-1] is not None  # the resume said which file it continues
    assert dest.read_bytes() == DATA[::-1]


def test_when_every_address_fails_one_message_names_each_and_the_manual_route(server, tmp_path):
    server.files["/page.ckpt"] = PAGE
    server.content_types["/page.ckpt"] = "text/html"
    server.files["/other.ckpt"] = DATA[::-1]
    file = mirrored(server, "/gone.ckpt", "/page.ckpt", "/other.ckpt")
    dest = tmp_path / "model.ckpt"
    with pytest.raises(ModelError) as caught:
        fetch(file, dest)
    message = str(caught.value)
    assert "could not download model.ckpt from the 3 addresses tried" in message
    for url, reason in zip(
        file.urls, ["HTTP 404", "web page (HTML)", f"but {SHA} was expected"], strict=True
    ):
        (line,) = [line for line in message.splitlines() if line.startswith(f"  - {url}:")]
        assert reason in line
    assert f"save it as {dest}" in message and f"feverdream models verify {dest}" in message
    assert not dest.exists() and not Path(f"{dest}.part").exists()


@pytest.fixture
def test_entry(server, monkeypatch) -> VQGANEntry:
    """A registry VQGAN whose files come from the test server."""
    entry = VQGANEntry(
        name="test_vqgan",
        config=ModelFile("test_vqgan.yaml", server.url("/model.yaml")),
        checkpoint=ModelFile("test_vqgan.ckpt", server.url("/model.ckpt"), 102_400),
        architecture=VQGANS["vqgan_imagenet_f16_1024"].architecture,
    )
    monkeypatch.setitem(VQGANS, entry.name, entry)
    return entry


def test_download_by_name_fills_the_models_folder(test_entry):
    paths = download("test_vqgan")
    folder = models_dir()
    assert paths == [folder / "test_vqgan.yaml", folder / "test_vqgan.ckpt"]
    ckpt, config, sha256 = resolve_vqgan("test_vqgan")
    assert (ckpt, config, sha256) == (paths[1], paths[0], SHA)


def test_the_models_cli_downloads_lists_and_locates(test_entry, capsys):
    assert main(["models", "path", "test_vqgan"]) == 1
    assert "feverdream models download test_vqgan" in capsys.readouterr().err
    assert main(["models", "download", "test_vqgan", "no_such_model"]) == 1
    out, err = capsys.readouterr()
    assert "test_vqgan.ckpt" in out and "unknown model 'no_such_model'" in err
    assert main(["models", "path", "test_vqgan"]) == 0
    assert capsys.readouterr().out.split() == [
        str(models_dir() / "test_vqgan.ckpt"),
        str(models_dir() / "test_vqgan.yaml"),
    ]
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    (row,) = [line for line in listing.splitlines() if line.startswith("test_vqgan")]
    assert "present" in row
    assert str(models_dir() / "test_vqgan.ckpt") in listing


def test_a_render_fetches_the_registry_models_it_names_first(test_entry, tmp_path, capsys):
    board = tmp_path / "board.yaml"
    board.write_text(
        "models:\n  vqgan: test_vqgan\n  clip: tiny\nkeyframes:\n  - at: 0s\n    prompt: a\n"
        "  - at: 1s\n"
    )
    code = main(["render", str(board), "-o", str(tmp_path / "out")])
    # The served bytes are no checkpoint: the render fetched them, then refused to load them.
    assert code == 1
    assert (models_dir() / "test_vqgan.ckpt").is_file()
    err = capsys.readouterr().err
    assert "test_vqgan.ckpt" in err and "models download" not in err
    assert not (tmp_path / "out" / "frames").exists()


def test_models_md_cites_every_address_and_hash_the_registry_uses():
    text = (Path(__file__).resolve().parents[1] / "MODELS.md").read_text()
    for entry in [*VQGANS.values(), *CLIPS.values(), *DEPTHS.values()]:
        if entry.source is not Source.DOWNLOAD:
            continue
        for file in entry.files:
            assert file.urls, f"{entry.name}: {file.filename} has no address"
            for url in file.urls:
                if "openaipublic" not in url:  # CLIP's are one pattern, given with its hashes
                    assert f"`{url}`" in text, f"{entry.name}: {url} is not in MODELS.md"
            if file.sha256:
                assert f"`{file.sha256}`" in text, f"{entry.name}: its hash is not in MODELS.md"


FETCH = """\
import sys
from pathlib import Path
from pipeline.errors import FeverdreamError
from pipeline.models.download import fetch
from pipeline.models.catalogue import ModelFile
try:
    print(fetch(ModelFile("model.ckpt", sys.argv[1], sha256=sys.argv[2]), Path(sys.argv[3])))
except FeverdreamError as error:
    sys.exit(f"error: {error}")
"""


def test_a_download_onto_a_full_disk_keeps_its_part_and_goes_on_once_there_is_room(
    server, tmp_path
):
    disk = tmp_path / "models"
    command = [sys.executable, "-c", FETCH, server.url("/model.ckpt"), SHA,
               str(disk / "model.ckpt")]  # fmt: skip
    full, roomy = on_a_small_disk(disk, [40 * 1024, 2**20], command)
    assert full.code == 1 and "Traceback" not in full.err, full.err
    assert full.last_line.startswith(f"error: the disk holding {disk} is full"), full.err
    assert "more needed" in full.last_line and "FEVERDREAM_MODELS" in full.last_line
    part = full.disk / "model.ckpt.part"
    assert 0 < part.stat().st_size < len(DATA) and DATA.startswith(part.read_bytes())
    assert roomy.code == 0 and roomy.out.strip() == SHA, roomy.err
    assert (roomy.disk / "model.ckpt").read_bytes() == DATA
    # The second run asked only for the rest.
    assert server.requests[-1] == ("/model.ckpt", f"bytes={part.stat().st_size}-")
