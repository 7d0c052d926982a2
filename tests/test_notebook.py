"""notebooks/feverdream.ipynb executed top to bottom in a real Jupyter kernel, as a Colab user
runs it: in a fresh environment that already has torch (tests/colab_env.py), the install cell
installs the wheel the user uploaded beside the notebook (offline, from a local wheelhouse);
then it validates a pasted storyboard, renders it with the tiny models, shows the video, offers
it, and sends it to (a fake) TikTok's drafts after logging in by pasting back the address the
login link led to, typed into the notebook's input box as a user would."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import queue
import shutil
import time
from pathlib import Path

import httpx
import nbformat
import pytest
from colab_env import make_venv, offline, own_packages
from fake_tiktok import FakeTikTok
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from test_render_pipeline import write_board
from test_studio import BOARD

from pipeline.check import probe_video
from pipeline.tiktok.config import Settings

CHECKOUT = Path(__file__).resolve().parents[1]
NOTEBOOK = CHECKOUT / "notebooks" / "feverdream.ipynb"

PASTED = BOARD  # the studio's test storyboard: a second of tiny models and a tone


def with_fields(**fields) -> nbformat.NotebookNode:
    """The notebook with its form fields set, as papermill does: a cell after the one tagged
    `parameters` that assigns them."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cells = notebook.cells
    (index,) = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    assigned = "\n".join(f"{name} = {value!r}" for name, value in fields.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(assigned))
    return notebook


class UserAtTheNotebook(NotebookClient):
    """Runs the notebook as nbclient does, but with input boxes, as Colab has: each input()
    is answered by `answer(what the asking cell has shown so far)`."""

    def __init__(self, notebook, answer, **kwargs):
        super().__init__(notebook, on_notebook_start=self._start, on_cell_execute=self._cell,
                         on_notebook_complete=self._stop, on_notebook_error=self._stop,
                         **kwargs)  # fmt: skip
        self.answer = answer
        self.prompts: list[str] = []
        self.failures: list[str] = []
        self.cell = None

    async def _start(self, notebook) -> None:
        self.kc.allow_stdin = True
        self.watcher = asyncio.ensure_future(self._answer_input())

    async def _cell(self, cell, cell_index) -> None:
        self.cell = cell

    async def _stop(self, notebook) -> None:
        self.watcher.cancel()

    async def _answer_input(self) -> None:
        while True:
            try:
                message = await self.kc.stdin_channel.get_msg(timeout=0.5)
            except queue.Empty:
                continue
            self.prompts.append(message["content"]["prompt"])
            shown = await asyncio.to_thread(self._shown, self.cell)
            try:
                answer = await asyncio.to_thread(self.answer, shown)
            except Exception as error:  # noqa: BLE001 (the test reports it; the cell must end)
                self.failures.append(f"{error!r} after the notebook showed:\n{shown}")
                answer = ""
            self.kc.input(answer)

    @staticmethod
    def _shown(cell) -> str:
        """The cell's output so far (the kernel's output may lag its question a little)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = "".join(o.get("text", "") for o in cell.get("outputs", []))
            if "http" in text:
                return text
            time.sleep(0.05)
        return text


def log_in_on_another_device(shown: str) -> str:
    """The user opens the printed link elsewhere, logs in (the fake consents at once), and
    copies the address the browser lands on (nothing listens there)."""
    authorize = os.environ["FEVERDREAM_TIKTOK_AUTHORIZE"]
    (link,) = [line.strip() for line in shown.splitlines() if line.strip().startswith(authorize)]
    answer = httpx.get(link, timeout=10)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def colab_kernel(folder: Path, python: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A Jupyter kernel running on the fresh environment's python, as Colab's runs on its own."""
    spec = folder / "kernels" / "colab"
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (a Colab-like environment)", "language": "python",
    }))  # fmt: skip
    monkeypatch.setenv("JUPYTER_PATH", str(folder))
    return "colab"


def outputs_text(notebook: nbformat.NotebookNode) -> str:
    return json.dumps([cell.get("outputs", []) for cell in notebook.cells])


def test_the_notebook_installs_renders_a_pasted_storyboard_and_posts_a_draft_after_a_pasted_login(
    tmp_path: Path,
    wheel: Path,
    wheelhouse: Path,
    tiny_model_dir,
    fake: FakeTikTok,
    monkeypatch: pytest.MonkeyPatch,
):
    python = make_venv(tmp_path / "env")
    kernel = colab_kernel(tmp_path / "jupyter", python, monkeypatch)
    notebook_folder = tmp_path / "content"  # Colab's /content
    notebook_folder.mkdir()
    # The wheel the user uploaded, named as a browser names a second download of it.
    shutil.copy(wheel, notebook_folder / wheel.name.replace(".whl", " (1).whl"))
    write_board(notebook_folder, PASTED)  # and the pasted storyboard's soundtrack, tone.wav
    for name, value in offline(wheelhouse).items():
        if name.startswith("PIP_"):
            monkeypatch.setenv(name, value)
    assert not Settings.from_env().token_path.exists()  # nobody is logged in yet
    notebook = with_fields(STORYBOARD=PASTED, PREVIEW=True, MODELS="tiny", POST_DRAFT=True)
    where = {"metadata": {"path": str(notebook_folder)}}
    user = UserAtTheNotebook(notebook, log_in_on_another_device, timeout=300,
                             kernel_name=kernel, resources=where)  # fmt: skip
    try:
        user.execute()
    finally:
        assert not user.failures, user.failures
    (task,) = fake.tasks.values()

    assert {"pipeline", "open_clip", "taming"} <= own_packages(python)
    assert "torch" not in own_packages(python)  # Colab's torch stayed
    text = outputs_text(notebook)
    assert "feverdream installed in" in text
    video = notebook_folder / "outputs" / "pasted" / "preview" / "pasted.mp4"
    info = probe_video(video)
    assert info.frame_count == 24 and info.audio is not None
    assert "pasted.yaml: ok: 'pipeline test'" in text
    assert "<video" in text  # shown inline
    assert len(user.prompts) == 1  # the login asked once for the address
    assert "SEND_TO_USER_INBOX" in text
    assert task.kind == "inbox" and task.received == video.stat().st_size
    token = Settings.from_env().token_path
    assert token.stat().st_mode & 0o777 == 0o600
    assert json.loads(token.read_text())["access_token"] not in text  # never shown


def run_notebook(notebook: nbformat.NotebookNode, folder: Path) -> nbformat.NotebookNode:
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute()  # fmt: skip
    return notebook


def stopped_at(notebook: nbformat.NotebookNode, folder: Path) -> str:
    try:
        run_notebook(notebook, folder)
    except CellExecutionError as error:
        return str(error)
    raise AssertionError("the notebook went on past a bad storyboard")


def test_a_bad_storyboard_stops_the_notebook_with_its_line(tmp_path: Path, tiny_model_dir):
    # Pasted as the form has it, on the lines after `STORYBOARD = """`: the line counted is
    # the pasted text's own.
    pasted = "\n" + PASTED.replace("fps: 24", "fps: 999")
    assert pasted.splitlines()[3] == "fps: 999"
    notebook = with_fields(INSTALL=False, MODELS="tiny", STORYBOARD=pasted)
    write_board(tmp_path, PASTED)
    assert "pasted.yaml:3: fps: 999 is out of range" in stopped_at(notebook, tmp_path)
    assert not (tmp_path / "outputs").exists()  # nothing rendered


def test_a_pasted_storyboard_says_which_files_to_upload_and_where(tmp_path: Path, tiny_model_dir):
    pasted = PASTED.replace('prompt: "a blue square"', 'prompt: {"image: photos/door.png": 1}')
    assert pasted != PASTED
    notebook = with_fields(INSTALL=False, MODELS="tiny", STORYBOARD=pasted)
    message = stopped_at(notebook, tmp_path)  # neither tone.wav nor the picture is here
    assert f"tone.wav  into  {tmp_path}/  (audio.file)" in message
    assert f"door.png  into  {tmp_path / 'photos'}/  (keyframes[2].prompt)" in message
    assert not (tmp_path / "outputs").exists()


def test_a_draft_after_the_login_expired_logs_in_again_by_pasting(tmp_path: Path, fake: FakeTikTok):
    """A login on the notebook's machine that TikTok no longer takes: the post cell logs in
    again there, by pasting (a Colab user has no terminal for `tiktok login`)."""
    from test_tiktok_post import make_video

    from pipeline import notebook
    from pipeline.tiktok.auth import Token, TokenStore

    old = Token.from_response(fake.issue_tokens())
    TokenStore(Settings.from_env().token_path).save(
        dataclasses.replace(old, expires_at=0.0, refresh_expires_at=0.0)  # both expired
    )
    video = make_video(tmp_path / "clip.mp4", fps=24)
    said: list[str] = []
    notebook.post_draft(video, say=said.append, ask=lambda prompt: log_in_on_another_device(
        "\n".join(said)))  # fmt: skip
    (task,) = fake.tasks.values()
    assert task.kind == "inbox" and task.received == video.stat().st_size
    assert any("expired" in line and "logging in again" in line for line in said), said
    assert TokenStore(Settings.from_env().token_path).load().access_token != old.access_token
