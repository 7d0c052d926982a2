"""feverdream studio: the storyboards of one folder in the browser: edit with the CLI's
FILE:LINE errors as you type, see the plan plotted, preview and render in the studio's own
queue, watch the frames come, play the video, check it and post it to TikTok.

    studio = Studio.start(Path("storyboards"))     # 127.0.0.1, a free port, a fresh token
    print(studio.url)                              # open it; the token becomes a cookie
    studio.close()

A web app (Starlette, served by uvicorn) over the library API (pipeline.run); the renders
run in pipeline.studio.jobs' worker, not in the web server's event loop.
"""

from __future__ import annotations

import secrets
import socket
import threading
from pathlib import Path

from pipeline.errors import FeverdreamError

LOCAL_HOSTS = ("127.0.0.1", "localhost")


def addresses(host: str) -> set[str]:
    """The names a browser may use to reach a studio listening on `host`: this machine's own
    names, and for a wildcard (0.0.0.0, ::) every name and address the machine has."""
    names = {*LOCAL_HOSTS, "::1", host}
    if host in ("0.0.0.0", "::", ""):
        for name in {socket.gethostname(), socket.getfqdn()}:
            names.add(name)
            try:
                names.update(str(info[4][0]) for info in socket.getaddrinfo(name, None))
            except OSError:
                pass
    return names


class Studio:
    """A running studio: its URL (with the token) and how to stop it."""

    def __init__(self, server, thread: threading.Thread | None, url: str, app):
        self.server, self.thread, self.url, self.app = server, thread, url, app

    @classmethod
    def start(
        cls,
        folder: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        outputs: Path | None = None,
        models: str | None = None,
        device: str | None = None,
        background: bool = True,
    ) -> Studio:
        """Listen on host:port (0: a free port). With `background` the server runs in a
        thread and this returns at once; otherwise `serve_forever` runs it."""
        try:
            import uvicorn

            from pipeline.studio.app import Workspace, make_app
        except ModuleNotFoundError as error:
            if (error.name or "").partition(".")[0] not in ("uvicorn", "starlette"):
                raise
            raise FeverdreamError(
                "the studio needs its web server: pip install 'feverdream[studio]' (make setup "
                "installs it)"
            ) from None
        from pipeline.studio.jobs import Jobs

        folder = Path(folder).resolve()
        if not folder.is_dir():
            raise FeverdreamError(f"{folder}: no such folder; give the folder of your storyboards")
        outputs = (outputs or Path("outputs")).resolve()
        outputs.mkdir(parents=True, exist_ok=True)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.create_server((host, port), family=family)
        except OSError as error:
            raise FeverdreamError(
                f"cannot listen on {host}:{port} ({error.strerror}); choose another --port"
            ) from None
        port = sock.getsockname()[1]
        names = addresses(host)
        hosts = {f"[{name}]:{port}" if ":" in name else f"{name}:{port}" for name in names}
        token = secrets.token_urlsafe(24)
        state = folder / ".feverdream-studio"
        jobs = Jobs(folder, outputs, models=models, device=device, state_dir=state)
        app = make_app(Workspace(folder, outputs, jobs, token, hosts))
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        shown = f"[{shown}]" if ":" in shown else shown
        url = f"http://{shown}:{port}/?token={token}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
        server = uvicorn.Server(config)
        if not background:
            studio = cls(server, None, url, app)
            studio.sockets = [sock]
            return studio
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="studio-http", daemon=True
        )
        thread.start()
        while not server.started and thread.is_alive():
            threading.Event().wait(0.02)
        return cls(server, thread, url, app)

    def serve_forever(self) -> None:
        self.server.run(sockets=self.sockets)

    def close(self) -> None:
        self.app.state.studio.closing.set()
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
