"""`feverdream studio` over HTTP, as a real server on 127.0.0.1: who may use it (the token, the
Host, the Origin), which files it serves, what it keeps of an edit, that a reload never starts
a second render, and that the TikTok token never leaves its file."""

from __future__ import annotations

import hashlib
import http.client
import json
import sys
import time
from pathlib import Path

import httpx
import pytest
from fake_tiktok import FakeTikTok
from small_disk import on_a_small_disk
from test_render_pipeline import BOARD as PIPELINE_BOARD
from test_render_pipeline import write_board

from pipeline import run
from pipeline.cli import main
from pipeline.models.files import models_dir
from pipeline.studio import Studio
from pipeline.studio.estimate import say_seconds, steps_left
from pipeline.tiktok.config import Settings

# The library's test storyboard (tiny models, a 1 s tone), made a second long, without the
# content warning's card.
BOARD = (
    PIPELINE_BOARD.replace("duration: 2s", "duration: 1s")
    .replace('content_warning: "TW: flashing abstract shapes"\ncontent_warning_duration: 1s\n', "")
    .replace("  fade_out: 0.5s\n", "")
)


@pytest.fixture
def studio(tmp_path: Path, tiny_model_dir):
    folder = tmp_path / "boards"
    folder.mkdir()
    write_board(folder, BOARD).rename(folder / "dread.yaml")
    running = Studio.start(folder, outputs=tmp_path / "outputs", models="tiny", device="cpu")
    yield running
    running.close()


def base(studio: Studio) -> str:
    return studio.url.split("/?")[0]


def token(studio: Studio) -> str:
    return studio.url.split("token=")[1]


def client(studio: Studio) -> httpx.Client:
    """A client that opened the start URL, so it holds the token as a cookie, like a browser."""
    http = httpx.Client(base_url=base(studio), timeout=30)
    opened = http.get(studio.url, follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/"
    return http


def raw_get(studio: Studio, path: str) -> int:
    """GET a path exactly as written (httpx would tidy `..` away), with the token."""
    host, port = base(studio).removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", path, headers={"X-Studio-Token": token(studio)})
    return connection.getresponse().status


def test_without_the_token_nothing_is_served(studio: Studio):
    anonymous = httpx.Client(base_url=base(studio))
    for path in ("/", "/api/boards", "/api/board/dread.yaml", "/files/folder/dread.yaml"):
        refused = anonymous.get(path)
        assert refused.status_code == 403 and "token" in refused.text
    assert (
        anonymous.post("/api/render", json={"name": "dread.yaml", "kind": "preview"}).status_code
        == 403
    )
    assert anonymous.get("/?token=not-the-token").status_code == 403
    assert client(studio).get("/api/boards").json()["boards"] == ["dread.yaml"]


def test_another_site_cannot_drive_it(studio: Studio):
    http = client(studio)
    evil = {"Origin": "https://evil.example"}
    refused = http.post("/api/render", json={"name": "dread.yaml", "kind": "render"}, headers=evil)
    assert refused.status_code == 403
    assert (
        http.post("/api/save", json={"name": "dread.yaml", "text": "x"}, headers=evil).status_code
        == 403
    )
    # DNS rebinding: a page of evil.example whose name now points at 127.0.0.1.
    assert http.get("/api/boards", headers={"Host": "evil.example"}).status_code == 403
    assert http.get("/api/boards", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert http.get("/api/events", headers={"Origin": "http://127.0.0.1:1"}).status_code == 403
    # Its own origin is fine, and nothing was queued by the refused requests.
    own = {"Origin": base(studio)}
    assert http.post("/api/view", json={"name": "dread.yaml", "text": BOARD}, headers=own).json()[
        "ok"
    ]
    assert studio.app.state.studio.jobs.snapshot()["jobs"] == []


def test_only_files_under_the_folder_and_outputs_are_served(studio: Studio, tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the page")
    folder = tmp_path / "boards"
    (folder / "out.txt").symlink_to(secret)
    (folder / ".feverdream-studio").mkdir(exist_ok=True)
    (folder / ".feverdream-studio" / "note").write_text("hidden")
    assert raw_get(studio, "/files/folder/dread.yaml") == 200
    assert raw_get(studio, "/files/folder/tone.wav") == 200
    for path in (
        "/files/folder/../secret.txt",
        "/files/folder/%2e%2e/secret.txt",
        "/files/outputs/../boards/dread.yaml",
        f"/files/folder/{secret}",  # absolute
        "/files/folder//etc/passwd",
        "/files/folder/out.txt",  # a link that leads out
        "/files/folder/.feverdream-studio/note",  # hidden
        "/files/elsewhere/dread.yaml",
    ):
        assert raw_get(studio, path) == 404, path


def test_a_bad_edit_loses_nothing(studio: Studio, tmp_path: Path):
    http = client(studio)
    path = tmp_path / "boards" / "dread.yaml"
    opened = http.get("/api/board/dread.yaml").json()
    assert opened["saved"] == BOARD and opened["draft"] is None
    base = opened["sha256"]
    assert base == hashlib.sha256(BOARD.encode()).hexdigest()
    broken = BOARD.replace("fps: 24", "fps: 999")
    edit = {"name": "dread.yaml", "text": broken, "base": base}
    view = http.post("/api/view", json=edit).json()
    assert not view["ok"] and view["error"]["line"] == 3 and view["error"]["key"] == "fps"
    assert view["error"]["text"].startswith("dread.yaml:3: fps:")
    saved = http.post("/api/save", json=edit)
    assert saved.status_code == 422 and not saved.json()["ok"]
    assert path.read_text() == BOARD  # the last valid version is untouched
    # A reload brings back both: the file as saved and the text being edited.
    reloaded = http.get("/api/board/dread.yaml").json()
    assert (reloaded["saved"], reloaded["draft"], reloaded["changed"]) == (BOARD, broken, False)
    fixed = broken.replace("fps: 999", "fps: 30")
    done = http.post("/api/save", json={**edit, "text": fixed}).json()
    assert done["ok"] and done["sha256"] == hashlib.sha256(fixed.encode()).hexdigest()
    assert path.read_text() == fixed
    reloaded = http.get("/api/board/dread.yaml").json()
    assert (reloaded["saved"], reloaded["draft"]) == (fixed, None)
    # Names stay inside the folder.
    assert http.post("/api/save", json={**edit, "name": "../x.yaml"}).status_code == 400
    assert http.post("/api/save", json={**edit, "name": "x.yaml\n"}).status_code == 400
    assert http.post("/api/view", json={**edit, "name": "ghost.yaml"}).status_code == 404
    assert http.post("/api/new", json={"name": "dread.yaml"}).status_code == 409
    assert http.post("/api/new", json={"name": "fresh.yaml"}).json() == {"name": "fresh.yaml"}
    fresh = (tmp_path / "boards" / "fresh.yaml").read_text()
    assert http.post("/api/view", json={"name": "fresh.yaml", "text": fresh}).json()["ok"]


def test_a_save_never_undoes_a_change_made_elsewhere(studio: Studio, tmp_path: Path):
    http = client(studio)
    path = tmp_path / "boards" / "dread.yaml"
    base = http.get("/api/board/dread.yaml").json()["sha256"]
    mine = BOARD.replace("seed: 5", "seed: 6")
    assert http.post("/api/view", json={"name": "dread.yaml", "text": mine, "base": base}).json()[
        "ok"
    ]
    elsewhere = BOARD.replace("seed: 5", "seed: 7")  # another editor, a git pull
    path.write_text(elsewhere)
    reloaded = http.get("/api/board/dread.yaml").json()
    assert (reloaded["saved"], reloaded["draft"], reloaded["changed"]) == (elsewhere, mine, True)
    refused = http.post("/api/save", json={"name": "dread.yaml", "text": mine, "base": base})
    assert refused.status_code == 409 and "changed outside the studio" in refused.json()["error"]
    assert path.read_text() == elsewhere
    # Having seen both, the user saves over the new file on purpose.
    again = {"name": "dread.yaml", "text": mine, "base": reloaded["sha256"]}
    assert http.post("/api/save", json=again).json()["ok"] and path.read_text() == mine


def test_what_the_studio_refuses_to_read_or_do(studio: Studio, tmp_path: Path):
    http = client(studio)
    outside = tmp_path / "outside.yaml"
    outside.write_text(BOARD)
    (tmp_path / "boards" / "link.yaml").symlink_to(outside)
    assert http.get("/api/boards").json()["boards"] == ["dread.yaml"]
    assert http.get("/api/board/link.yaml").status_code == 403
    assert http.post("/api/new", json={"name": "copy.yaml", "from": "link.yaml"}).status_code == 403
    (tmp_path / "boards" / "latin1.yaml").write_bytes("title: caf\xe9\n".encode("latin-1"))
    assert "UTF-8" in http.get("/api/board/latin1.yaml").json()["error"]
    assert http.post("/api/stop", json={"job": "abc"}).status_code == 400
    huge = {"name": "dread.yaml", "text": "#" * (2 << 20)}
    assert http.post("/api/view", json=huge).status_code == 413
    page = http.get("/")
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    # Each studio's cookie is its own (browsers share cookies between a host's ports).
    assert set(http.cookies) == {f"feverdream_studio_{base(studio).rsplit(':', 1)[1]}"}


def test_the_plan_is_what_the_cli_plans(studio: Studio):
    view = client(studio).post("/api/view", json={"name": "dread.yaml", "text": BOARD}).json()
    story = run.load(Path(studio.app.state.studio.folder) / "dread.yaml")
    assert view["n_frames"] == story.plan.n_frames == 24
    assert view["series"]["zoom"] == [fp.zoom for fp in story.plan.frames]
    assert view["prompts"]["a red circle"][0] == 1 and view["prompts"]["a blue square"][-1] > 0.9
    # Beside each weight, what the render's engine aims at: the plan some frames ahead.
    lead = view["aim_lead"]
    assert lead == run.aim_lead(story.board) > 0
    settings = run.aim_settings(story.board)
    aims = {text: [dict(story.plan.engine_aim(f, settings)).get(text, 0.0) for f in range(24)]
            for text in story.plan.prompt_texts}  # fmt: skip
    assert view["aims"] == aims and view["aims"] != view["prompts"]
    assert [k["t"] for k in view["keyframes"]] == [0, 1]
    assert len(view["waveform"]) == 24 and max(view["waveform"]) == 1
    render = view["estimate"]["render"]
    assert render["canvas"] == "144x256" and render["optimised"] == 24
    assert render["steps"] == 2 + 23 * 1 and render["seconds"] is None  # not timed yet
    # The studio's --models tiny: built on first use, nothing to download.
    needed = view["models"]["needed"]
    assert [(m["name"], m["role"], m["source"]) for m in needed] == [
        ("tiny", "VQGAN", "built"),
        ("tiny", "CLIP", "built"),
    ]
    assert view["models"]["download"] == [] and view["models"]["download_bytes"] == 0


def test_the_plan_of_a_3d_storyboard_shows_its_camera_and_its_depth_model(studio: Studio):
    # A storyboard that moves the 3D camera: the page plots its keys per frame, and the
    # models it needs include the depth model (the studio's tiny one: nothing to download).
    text = BOARD.replace("zoom: 1.03", "translate: [1, 0, 0.02]\n    rotate_3d: [0, 0.5, 0]")
    assert "translate" in text
    view = client(studio).post("/api/view", json={"name": "dread.yaml", "text": text}).json()
    assert view["ok"], view
    assert view["series"]["translate_z"][0] == 0.02 and view["series"]["rotate_3d_y"][0] == 0.5
    assert view["series"]["fov"] == [40.0] * view["n_frames"]
    roles = [(m["name"], m["role"]) for m in view["models"]["needed"]]
    assert roles == [("tiny", "VQGAN"), ("tiny", "CLIP"), ("tiny", "depth model")]
    # Without a 3D key, none of it.
    flat = client(studio).post("/api/view", json={"name": "dread.yaml", "text": BOARD}).json()
    assert "translate_z" not in flat["series"]


def test_a_render_asked_twice_is_one_render_and_stops_when_asked(studio: Studio, tmp_path: Path):
    http, other_tab = client(studio), client(studio)
    first = http.post("/api/render", json={"name": "dread.yaml", "kind": "render"}).json()
    again = other_tab.post("/api/render", json={"name": "dread.yaml", "kind": "render"}).json()
    assert again["id"] == first["id"]
    jobs = studio.app.state.studio.jobs
    deadline = time.monotonic() + 120
    seen = set()  # what the page said it was doing while the render ran
    while jobs.get(first["id"]).stage != "frames":  # the models loaded, the frames begun
        job = jobs.get(first["id"])
        assert time.monotonic() < deadline and job.state in ("queued", "running")
        if job.state == "running":
            seen.add((job.stage, job.activity))
        time.sleep(0.02)
    # Never a bare "running 0/0": from the start each stage is named.
    assert seen and all(activity for _, activity in seen), seen
    assert "frame" in jobs.get(first["id"]).activity
    stopped = http.post("/api/stop", json={"job": first["id"]}).json()
    assert stopped["state"] == "stopping"
    while jobs.get(first["id"]).state not in ("stopped", "failed", "done"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    job = jobs.get(first["id"])
    assert job.state == "stopped" and "continue" in job.message, job.message
    assert len(jobs.snapshot()["jobs"]) == 1

    # The command line continues what the studio began: the frames made stay as they are.
    folder = tmp_path / "outputs" / "dread"
    made = {p.name: p.stat().st_mtime_ns for p in (folder / "frames").glob("*.png")}
    assert 0 < len(made) < 24
    board = str(tmp_path / "boards" / "dread.yaml")
    assert main(["render", board, "--models", "tiny", "--device", "cpu", "-o", str(folder)]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (folder / "frames").glob("*.png")}
    assert after.items() >= made.items()  # every frame the studio made, untouched
    assert len(list((folder / "frames").glob("*.png"))) == 24 and (folder / "dread.mp4").is_file()


def test_a_storyboard_changed_under_its_frames_starts_over_when_asked(
    studio: Studio, tmp_path: Path
):
    http = client(studio)
    jobs = studio.app.state.studio.jobs

    def finished(job: dict) -> dict:
        deadline = time.monotonic() + 120
        while jobs.get(job["id"]).state in ("queued", "running", "stopping"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        return jobs.get(job["id"]).public()

    first = finished(
        http.post("/api/render", json={"name": "dread.yaml", "kind": "preview"}).json()
    )
    assert first["state"] == "done" and first["video"] == "dread/preview/dread.mp4"
    assert first["estimate_s"] is None and "now timed" in first["message"]
    # One model of the time: the seconds per step this preview measured × the steps, for
    # the plan's estimate and for the next preview's time left as it begins.
    view = http.post("/api/view", json={"name": "dread.yaml", "text": BOARD}).json()
    preview = view["estimate"]["preview"]
    assert preview["seconds_per_step"] == pytest.approx(first["seconds_per_step"], abs=1e-4)
    assert preview["seconds"] == preview["seconds_per_step"] * preview["steps"]
    assert view["estimate"]["render"]["seconds"] is None  # another canvas: not timed yet
    base = http.get("/api/board/dread.yaml").json()["sha256"]
    edited = BOARD.replace("a red circle", "a green triangle")
    assert http.post("/api/save", json={"name": "dread.yaml", "text": edited, "base": base}).json()[
        "ok"
    ]
    refused = finished(
        http.post("/api/render", json={"name": "dread.yaml", "kind": "preview"}).json()
    )
    assert refused["state"] == "failed" and refused["changed"]
    assert "changed at frame 0" in refused["message"] and "--fresh" not in refused["message"]
    assert "Start over" in refused["message"]
    again = {"name": "dread.yaml", "kind": "preview", "fresh": True}
    job_id = http.post("/api/render", json=again).json()["id"]
    watched = []  # the time left as the page saw it, frame by frame
    deadline = time.monotonic() + 120
    while (job := jobs.get(job_id)).state in ("queued", "running"):
        assert time.monotonic() < deadline
        (seen,) = [j for j in jobs.snapshot()["jobs"] if j["id"] == job_id]
        if seen["stage"] == "frames":
            watched.append((seen["done"], seen["eta_s"], seen["seconds_per_step"]))
        time.sleep(0.01)
    redone = job.public()
    assert redone["state"] == "done" and redone["check"]["problems"] == []
    # Started over, its time left as it began was the plan's estimate (same steps), and as
    # it ran, the steps left at the seconds per step measured so far.
    assert redone["estimate_s"] == preview["seconds"]
    story = run.load(tmp_path / "boards" / "dread.yaml")
    steps = run.optimised_steps(story, jobs.options(story, "preview"))
    assert watched and all(
        eta == pytest.approx(per_step * steps_left(steps, done)) for done, eta, per_step in watched
    ), watched
    assert f"the plan said {say_seconds(preview['seconds'])}" in redone["message"]


def test_the_tiktok_token_never_reaches_the_page(studio: Studio, logged_in_tiktok: FakeTikTok):
    http = client(studio)
    stored = json.loads(Settings.from_env().token_path.read_text())
    secrets = [stored["access_token"], stored["refresh_token"]]
    account = http.get("/api/tiktok").json()
    assert account["logged_in"] and "video.upload" in account["scopes"]
    seen = [http.get("/api/tiktok").text, http.get("/api/boards").text, http.get("/").text]
    for text in seen:
        for secret in secrets:
            assert secret not in text


def test_a_render_that_downloads_says_so_first_and_fails_offline_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The storyboards' own models, no --models: a newcomer's studio.
    folder = tmp_path / "videos" / "storyboards"
    folder.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path))
    running = Studio.start(folder, outputs=tmp_path / "outputs", device="cpu")
    try:
        http = client(running)
        assert http.get("/api/boards").json()["shown"] == "~/videos/storyboards"
        # A new storyboard starts from the shapes example: its models ship with feverdream.
        assert http.post("/api/new", json={"name": "first.yaml"}).status_code == 200
        text = (folder / "first.yaml").read_text()
        shapes = http.post("/api/view", json={"name": "first.yaml", "text": text}).json()
        assert {(m["name"], m["source"], m["present"]) for m in shapes["models"]["needed"]} == {
            ("shapes", "packaged", True)
        }
        assert shapes["models"]["download"] == []
        # The real models' example says what its first render downloads, and how big.
        made = http.post("/api/new", json={"name": "real.yaml", "example": "real"})
        assert made.status_code == 200
        for example in ("y", ["shapes"], {"a": 1}):
            refused = http.post("/api/new", json={"name": "x.yaml", "example": example})
            assert refused.status_code == 400 and not (folder / "x.yaml").exists()
        text = (folder / "real.yaml").read_text()
        real = http.post("/api/view", json={"name": "real.yaml", "text": text}).json()["models"]
        assert real["download"] == ["vqgan_imagenet_f16_16384", "ViT-B/32"]
        assert [m["bytes"] for m in real["needed"]] == [980_000_000, 338_000_000]
        assert real["download_bytes"] == 1_318_000_000 and real["folder"] == str(models_dir())

        # Offline (every address refused): one clear line with the command, the addresses
        # folded away in the details.
        for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
            monkeypatch.setenv(name, "http://127.0.0.1:9")
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.setenv(name, "127.0.0.1,localhost")
        job = http.post("/api/render", json={"name": "real.yaml", "kind": "preview"}).json()
        jobs = running.app.state.studio.jobs
        deadline = time.monotonic() + 60
        while jobs.get(job["id"]).state in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        failed = jobs.get(job["id"]).public()
        assert failed["state"] == "failed", failed
        what, command = failed["message"].split("\n")
        assert what == "could not download vqgan_imagenet_f16_16384: this machine seems offline"
        assert command.startswith(
            "in a terminal: `feverdream models download vqgan_imagenet_f16_16384 ViT-B/32`"
        )
        assert "shapes models" in command and "http" not in command
        assert failed["details"].count("https://") >= 6 and "by hand" in failed["details"]
        assert not models_dir().exists() or not any(models_dir().iterdir())  # nothing half-made
    finally:
        running.close()


DRAFT = """\
import sys
from pathlib import Path
from pipeline.errors import FeverdreamError
from pipeline.studio.app import Workspace
folder = Path(sys.argv[1])
if not (folder / "board.yaml").exists():
    (folder / "board.yaml").write_text("title: board\\n")
studio = Workspace(folder, folder / "outputs", None, "token", set())
try:
    studio.keep_draft("board.yaml", "# a long edit\\n" * 20_000, "base")
    print(studio.read_board("board.yaml")["draft"] is not None)
except FeverdreamError as error:
    sys.exit(f"error: {error}")
"""


def test_a_draft_kept_on_a_full_disk_is_a_message_and_kept_once_there_is_room(tmp_path):
    disk = tmp_path / "boards"
    command = [sys.executable, "-c", DRAFT, str(disk)]
    full, roomy = on_a_small_disk(disk, [64 * 1024, 2**20], command)
    assert full.code == 1 and "Traceback" not in full.err, full.err
    drafts = disk / ".feverdream-studio" / "drafts"
    assert full.last_line.startswith(f"error: the disk holding {drafts} is full"), full.err
    assert not list((full.disk / ".feverdream-studio" / "drafts").iterdir())  # nothing half
    assert roomy.code == 0 and roomy.out.strip() == "True", roomy.err
