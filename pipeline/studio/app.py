"""The studio's web app: pages and a JSON API over the library, behind a per-run token.

Every request must carry the token (the cookie the start URL sets, or an X-Studio-Token
header), name the studio itself as its Host (no DNS rebinding) and, when it says where it
comes from, come from the studio's own origin: no other web page the user visits can read
or drive it. Files are served from the storyboard folder and the outputs only, never a
hidden file, never through a link that leads out. The TikTok token stays in its file."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from pipeline import run
from pipeline.errors import FeverdreamError, StoryboardError
from pipeline.studio.estimate import needed_models, seconds_left, timing_key
from pipeline.studio.jobs import Jobs, verdict

STATIC = Path(__file__).parent / "static"
# A new storyboard's text: the shapes world's models ship with feverdream, so its example
# previews on any machine at once (the default); the real models' downloads 1.3 GB first.
EXAMPLES = {
    "shapes": Path(__file__).parent / "example-shapes.yaml",
    "real": Path(__file__).parent / "example.yaml",
}
BOARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\- ]*\.ya?ml")  # whole names (fullmatch)
MAX_BODY = 1 << 20  # a storyboard is a few kB; a larger request is refused
# Every response: no page of another site may frame the studio (clickjacking).
FRAMING = {"Content-Security-Policy": "frame-ancestors 'none'", "X-Frame-Options": "DENY"}


@dataclass
class Posting:
    """The one TikTok post the studio may be making, and what it said so far."""

    state: str = "idle"  # idle, posting, done, failed
    video: str = ""
    lines: list[str] = field(default_factory=list)
    url: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def public(self) -> dict[str, Any]:
        return {
            f.name: list(value) if isinstance(value := getattr(self, f.name), list) else value
            for f in fields(self)
            if f.name != "lock"
        }


class Workspace:
    """What the app serves: the storyboard folder, the outputs and the render queue."""

    def __init__(self, folder: Path, outputs: Path, jobs: Jobs, token: str, hosts: set[str]):
        self.folder, self.outputs, self.jobs = folder, outputs, jobs
        self.token, self.hosts = token, hosts
        self.drafts = folder / ".feverdream-studio" / "drafts"
        self.posting = Posting()
        self.post_version = 0
        self.closing = threading.Event()  # set as the studio stops: event streams end

    # --- storyboards ---------------------------------------------------------------------
    # A draft is the text being edited when it differs from the file, kept with the digest of
    # the file it began from: a reload brings it back, and a save over a file changed since
    # (in another editor, another tab, a git pull) is refused instead of undoing that change.

    def board_path(self, name: Any, exists: bool = False) -> Path:
        if not isinstance(name, str) or not BOARD_NAME.fullmatch(name):
            raise Refused(f"{name!r} is not a storyboard name here (NAME.yaml)", 400)
        path = self.folder / name
        if path.is_symlink() and not path.resolve().is_relative_to(self.folder):
            raise Refused(f"{name} leads out of {self.folder}; the studio does not follow it", 403)
        if exists and not path.is_file():
            raise Refused(f"{name}: no such storyboard in {self.folder}", 404)
        return path

    def boards(self) -> list[str]:
        names = [p.name for p in self.folder.iterdir() if BOARD_NAME.fullmatch(p.name)]
        return sorted(n for n in names if (self.folder / n).resolve().is_relative_to(self.folder)
                      and (self.folder / n).is_file())  # fmt: skip

    def saved(self, name: str) -> tuple[str, str]:
        """The storyboard's text on disk and its digest."""
        data = self.board_path(name, exists=True).read_bytes()
        try:
            return data.decode("utf-8"), hashlib.sha256(data).hexdigest()
        except UnicodeDecodeError:
            raise Refused(f"{name} is not UTF-8 text; save it as UTF-8 in an editor", 415) from None

    def read_board(self, name: str) -> dict[str, Any]:
        saved, digest = self.saved(name)
        draft = self._draft(name)
        board = {"name": name, "saved": saved, "sha256": digest, "draft": None, "changed": False}
        if draft is not None and draft["text"] != saved:
            # "changed": the file was changed elsewhere since the draft began.
            board.update(draft=draft["text"], changed=draft["base"] != digest)
        return board

    def keep_draft(self, name: str, text: str, base: str) -> str:
        """The text being edited, kept on every change so that a reload loses nothing; the
        digest of the file as it is now."""
        saved, digest = self.saved(name)
        if text == saved:
            self.drop_draft(name)
        else:
            self.drafts.mkdir(parents=True, exist_ok=True)
            run.atomic_write_json(self.drafts / f"{name}.json", {"text": text, "base": base})
        return digest

    def _draft(self, name: str) -> dict[str, str] | None:
        try:
            data = json.loads((self.drafts / f"{name}.json").read_text(encoding="utf-8"))
            return {"text": str(data["text"]), "base": str(data["base"])}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def drop_draft(self, name: str) -> None:
        (self.drafts / f"{name}.json").unlink(missing_ok=True)

    def view(self, name: str, text: str) -> dict[str, Any]:
        """The storyboard's first problem at its line, or its plan as the page plots it."""
        try:
            story = run.load(self.board_path(name), text)
        except StoryboardError as error:
            return {
                "ok": False,
                "error": {
                    "line": error.line,
                    "key": error.key,
                    "message": error.message,
                    "text": str(error).replace(f"{self.folder}/", ""),
                },
            }
        except FeverdreamError as error:
            message = str(error).replace(f"{self.folder}/", "")
            return {"ok": False, "error": {"line": None, "key": "", "message": message,
                                           "text": message}}  # fmt: skip
        return {"ok": True, **plan_view(story, self.jobs)}

    def save(self, name: str, text: str, base: str) -> dict[str, Any]:
        """Write the storyboard if it is valid (atomically) and the file is still the one the
        editing began from; otherwise keep the text as a draft, so the last valid version
        and the text being edited both survive."""
        if self.keep_draft(name, text, base) != base:
            raise Refused(
                f"{name} was changed outside the studio since you opened it; your text is kept "
                "as a draft: reload to see both, then save again",
                409,
            )
        view = self.view(name, text)
        if view["ok"]:
            path = self.board_path(name)
            run.atomic_write(path, lambda tmp: tmp.write_bytes(text.encode("utf-8")))
            self.drop_draft(name)
            view["sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return view

    def new_board(self, name: str, source: str | None, example: Any = "shapes") -> str:
        path = self.board_path(name)
        if not source and (not isinstance(example, str) or example not in EXAMPLES):
            raise Refused(f"example: one of {', '.join(EXAMPLES)}", 400)
        text = self.saved(source)[0] if source else EXAMPLES[example].read_text(encoding="utf-8")
        try:
            with open(path, "x", encoding="utf-8") as file:
                file.write(text)
        except FileExistsError:
            raise Refused(f"{name} already exists in {self.folder}", 409) from None
        return name

    # --- files -----------------------------------------------------------------------------

    def file(self, root: str, relative: str) -> Path:
        base = {"folder": self.folder, "outputs": self.outputs}.get(root)
        parts = Path(relative).parts
        if (
            base is None
            or Path(relative).is_absolute()
            or any(part in ("..", "") or part.startswith(".") for part in parts)
        ):
            raise Refused("not a file the studio serves", 404)
        try:
            path = (base / relative).resolve()
            served = path.is_relative_to(base.resolve()) and path.is_file()
        except (OSError, ValueError):  # a NUL byte, a name too long
            served = False
        if not served:
            raise Refused("not a file the studio serves", 404)
        return path

    # --- TikTok ----------------------------------------------------------------------------

    def post(self, video: str, mode: str, privacy: str | None, caption: str) -> None:
        path = self.file("outputs", video)
        with self.posting.lock:
            if self.posting.state == "posting":
                raise Refused("a post is already going out; wait for it to finish", 409)
            self.posting = Posting(state="posting", video=video)
        posting = self.posting

        def say(line: str) -> None:
            posting.lines.append(line)
            self.post_version += 1

        def send() -> None:
            try:
                result = run.post(path, mode, caption, say=say, privacy=privacy, yes=True)
                posting.url = result.url
                posting.state = "done"
            except FeverdreamError as error:
                posting.lines.append(f"error: {error}")
                posting.state = "failed"
            except Exception as error:  # the studio lives on; the page shows what broke
                posting.lines.append(f"unexpected error: {type(error).__name__}: {error}")
                posting.state = "failed"
            self.post_version += 1

        self.post_version += 1
        threading.Thread(target=send, name="studio-post", daemon=True).start()


class Refused(FeverdreamError):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _camera_3d_series(plan: Any) -> dict[str, list[float]]:
    """The 3D camera's keys per frame (translate_x..., rotate_3d_x..., fov), in a plan that
    moves it; none in one that does not."""
    if not plan.camera_3d:
        return {}
    series: dict[str, list[float]] = {}
    for key in ("translate", "rotate_3d"):
        for i, axis in enumerate("xyz"):
            series[f"{key}_{axis}"] = [getattr(fp, key)[i] for fp in plan.frames]
    series["fov"] = [fp.fov for fp in plan.frames]
    return series


def plan_view(story: run.Story, jobs: Jobs) -> dict[str, Any]:
    """What the page plots: every frame's motion and prompt weights, keyframes, beats, the
    soundtrack's loudness per frame, and the time a preview and a render would take."""
    plan, board = story.plan, story.board
    frames = plan.frames
    lead = run.aim_lead(board)
    estimates = {}
    for kind in ("preview", "render"):
        options = jobs.options(story, kind)
        steps = run.optimised_steps(story, options)
        device = run.pick_device(options.device)
        per_step = jobs.timing.get(timing_key(story, options, device))
        settings = run.render_settings(story, options)
        estimates[kind] = {
            "canvas": f"{settings.width}x{settings.height}",
            "optimised": len(steps),
            "steps": sum(steps.values()),
            "seconds_per_step": per_step,
            "seconds": seconds_left(per_step, steps),  # a render's own ETA as it begins
            "device": device,
        }
    # Preview and render read the same models.
    needed = needed_models(story, jobs.options(story, "preview"))
    downloads = [model for model in needed if model.downloads]
    return {
        "title": board.title,
        "fps": board.fps,
        "n_frames": plan.n_frames,
        "duration": plan.duration,
        "caption": board.caption or "",
        "t": [fp.t for fp in frames],
        "series": {
            "zoom": [fp.zoom for fp in frames],
            "rotate": [fp.rotate for fp in frames],
            "pan_x": [fp.pan_x for fp in frames],
            "pan_y": [fp.pan_y for fp in frames],
            **_camera_3d_series(plan),
        },
        "prompts": {
            text: [dict(fp.prompts).get(text, 0.0) for fp in frames] for text in plan.prompt_texts
        },
        # What the render's engine aims at, a little ahead, so that it shows each on time.
        "aims": plan.aim_weights(run.aim_settings(board)),
        "aim_lead": lead,
        "keyframes": [{"t": m.t, "frame": m.frame, "label": m.label} for m in plan.keyframes],
        "beats": list(plan.beat_times),
        "waveform": list(story.features.rms) if story.features is not None else None,
        "estimate": estimates,
        "models": {
            "needed": [{**asdict(model), "downloads": model.downloads} for model in needed],
            # What the first render downloads (the registry's stated sizes), and where to.
            "download": [model.name for model in downloads],
            "download_bytes": sum(model.bytes or 0 for model in downloads),
            "folder": str(run.models_folder()),
        },
    }


# --- the app ---------------------------------------------------------------------------------


class Guard(BaseHTTPMiddleware):
    """The token, the Host and the Origin, checked before any route runs."""

    async def dispatch(self, request: Request, call_next):
        studio: Workspace = request.app.state.studio
        host = request.headers.get("host", "")
        if host not in studio.hosts:
            return PlainTextResponse("refused: this is not the studio's address", 403)
        origin = request.headers.get("origin")
        if origin is not None and origin not in {f"http://{h}" for h in studio.hosts}:
            return PlainTextResponse("refused: a request from another site", 403)
        if request.headers.get("sec-fetch-site") == "cross-site":
            return PlainTextResponse("refused: a request from another site", 403)
        # Browsers share cookies between the ports of one host: each studio has its own name.
        cookie = f"feverdream_studio_{request.url.port}"
        offered = request.query_params.get("token")
        if request.url.path == "/" and offered is not None:
            if not same(offered, studio.token):
                return PlainTextResponse(
                    "refused: a wrong token; open the URL the studio printed", 403
                )
            response = RedirectResponse("/", 303)
            response.set_cookie(cookie, studio.token, httponly=True, samesite="strict")
            return response
        given = request.cookies.get(cookie) or request.headers.get("x-studio-token") or ""
        if not same(given, studio.token):
            return PlainTextResponse(
                "refused: no studio token (or the studio restarted); open the URL "
                "`feverdream studio` printed",
                403,
            )
        response = await call_next(request)
        response.headers.update(FRAMING)
        return response


def shown(folder: Path) -> str:
    """A folder as the page's header names it: under the home folder, as ~/..."""
    home = Path.home().resolve()
    if not folder.is_relative_to(home):
        return str(folder)
    return "/".join(["~", *folder.relative_to(home).parts])


def same(given: str, token: str) -> bool:
    return secrets.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


async def refused(request: Request, error: Exception) -> Response:
    """A request the studio cannot do, answered with what to do instead."""
    return JSONResponse({"error": str(error)}, getattr(error, "status", 400))


async def broken(request: Request, error: Exception) -> Response:
    """A bug: the page gets a message, the studio's terminal the traceback (uvicorn's)."""
    return JSONResponse(
        {"error": f"the studio failed: {type(error).__name__}: {error} (its terminal shows more)"},
        500,
    )


async def body(request: Request) -> dict[str, Any]:
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise Refused("the request is too large for a storyboard", 413)
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise Refused("the request is too large for a storyboard", 413)
    try:
        data = json.loads(raw)
    except ValueError:
        raise Refused("the request's body is not JSON", 400) from None
    if not isinstance(data, dict):
        raise Refused("the request's body is not a JSON object", 400)
    return data


def make_app(studio: Workspace) -> Starlette:
    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return PlainTextResponse("no such file", 404)
        return FileResponse(path)

    async def boards(request: Request) -> Response:
        return JSONResponse(
            {"folder": str(studio.folder), "shown": shown(studio.folder), "boards": studio.boards()}
        )

    async def board(request: Request) -> Response:
        return JSONResponse(studio.read_board(request.path_params["name"]))

    async def draft(request: Request) -> Response:
        """Keep the text being edited (the page sends it as it changes, and as it closes)."""
        data = await body(request)
        name, text = data.get("name"), str(data.get("text", ""))
        studio.keep_draft(name, text, str(data.get("base", "")))
        return JSONResponse({"kept": True})

    async def view(request: Request) -> Response:
        data = await body(request)
        name, text = data.get("name"), str(data.get("text", ""))
        studio.keep_draft(name, text, str(data.get("base", "")))
        return JSONResponse(await asyncio.to_thread(studio.view, name, text))

    async def save(request: Request) -> Response:
        data = await body(request)
        name, text, base = data.get("name"), str(data.get("text", "")), str(data.get("base", ""))
        result = await asyncio.to_thread(studio.save, name, text, base)
        return JSONResponse(result, 200 if result["ok"] else 422)

    async def discard(request: Request) -> Response:
        name = (await body(request)).get("name")
        studio.board_path(name, exists=True)
        studio.drop_draft(name)
        return JSONResponse(studio.read_board(name))

    async def new(request: Request) -> Response:
        data = await body(request)
        name = studio.new_board(data.get("name"), data.get("from") or None,
                                data.get("example") or "shapes")  # fmt: skip
        return JSONResponse({"name": name})

    async def render(request: Request) -> Response:
        data = await body(request)
        kind = data.get("kind")
        if kind not in ("preview", "render"):
            raise Refused("kind: preview or render", 400)
        path = studio.board_path(data.get("name"), exists=True)
        fresh = data.get("fresh") is True
        return JSONResponse(studio.jobs.submit(path.name, kind, fresh).public())

    async def stop(request: Request) -> Response:
        job = (await body(request)).get("job")
        if not isinstance(job, int):
            raise Refused("job: the render's number", 400)
        return JSONResponse(studio.jobs.stop(job).public())

    async def events(request: Request) -> Response:
        async def stream():
            seen = None
            while not studio.closing.is_set() and not await request.is_disconnected():
                snapshot = studio.jobs.snapshot()
                now = (snapshot["version"], studio.post_version)
                if now != seen:
                    seen = now
                    state = {**snapshot, "post": studio.posting.public()}
                    yield f"data: {json.dumps(state)}\n\n"
                await asyncio.sleep(0.25)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})  # fmt: skip

    async def check(request: Request) -> Response:
        video = studio.file("outputs", request.query_params.get("video", ""))
        return JSONResponse(await asyncio.to_thread(verdict, video, studio.outputs))

    async def tiktok(request: Request) -> Response:
        try:
            account = await asyncio.to_thread(run.account)
        except FeverdreamError as error:
            return JSONResponse({"logged_in": False, "error": str(error)})
        return JSONResponse(asdict(account))

    async def post(request: Request) -> Response:
        data = await body(request)
        mode = data.get("mode")
        if mode not in ("draft", "direct"):
            raise Refused("mode: draft or direct", 400)
        studio.post(str(data.get("video", "")), mode, data.get("privacy") or None,
                    str(data.get("caption", "")))  # fmt: skip
        return JSONResponse(studio.posting.public())

    async def result(request: Request) -> Response:
        """The videos already made from a storyboard (here or by `feverdream render`)."""
        stem = studio.board_path(request.path_params["name"]).stem
        made = {}
        for kind, folder in (("render", Path(stem)), ("preview", Path(stem) / "preview")):
            video = studio.outputs / folder / f"{stem}.mp4"
            if video.is_file():
                contact = studio.outputs / folder / "contact.png"
                made[kind] = {
                    "video": (folder / video.name).as_posix(),
                    "contact_sheet": (folder / contact.name).as_posix()
                    if contact.is_file()
                    else None,
                }
        return JSONResponse(made)

    async def files(request: Request) -> Response:
        path = studio.file(request.path_params["root"], request.path_params["path"])
        return FileResponse(path, headers={"Cache-Control": "no-store"})

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/static/{name}", static),
            Route("/api/boards", boards),
            Route("/api/board/{name}", board),
            Route("/api/draft", draft, methods=["POST"]),
            Route("/api/view", view, methods=["POST"]),
            Route("/api/save", save, methods=["POST"]),
            Route("/api/discard", discard, methods=["POST"]),
            Route("/api/new", new, methods=["POST"]),
            Route("/api/render", render, methods=["POST"]),
            Route("/api/stop", stop, methods=["POST"]),
            Route("/api/events", events),
            Route("/api/check", check),
            Route("/api/result/{name}", result),
            Route("/api/tiktok", tiktok),
            Route("/api/post", post, methods=["POST"]),
            Route("/files/{root}/{path:path}", files),
        ],
        middleware=[Middleware(Guard)],
        exception_handlers={FeverdreamError: refused, Exception: broken},
    )
    app.state.studio = studio
    return app
