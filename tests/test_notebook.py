"""notebooks/feverdream.ipynb executed top to bottom in a real Jupyter kernel, on the CPU, as
Colab would run it, with its form fields set to a short pasted storyboard and the tiny models:
it validates, renders, shows the video, offers it and sends it to (a fake) TikTok's drafts."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
from fake_tiktok import FakeTikTok
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from test_render_pipeline import write_board
from test_studio import BOARD

from pipeline.check import probe_video

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


def run_notebook(notebook: nbformat.NotebookNode, folder: Path) -> nbformat.NotebookNode:
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute()  # fmt: skip
    return notebook


def outputs_text(notebook: nbformat.NotebookNode) -> str:
    return json.dumps([cell.get("outputs", []) for cell in notebook.cells])


def test_the_notebook_renders_a_pasted_storyboard_and_posts_a_draft(
    tmp_path: Path, tiny_model_dir, logged_in_tiktok: FakeTikTok
):
    write_board(tmp_path, PASTED)  # its soundtrack, tone.wav, beside the notebook
    notebook = run_notebook(
        with_fields(
            INSTALL=False,
            CHECKOUT=str(CHECKOUT),
            STORYBOARD=PASTED,
            PREVIEW=True,
            MODELS="tiny",
            POST_DRAFT=True,
        ),  # fmt: skip
        tmp_path,
    )
    video = tmp_path / "outputs" / "pasted" / "preview" / "pasted.mp4"
    info = probe_video(video)
    assert info.frame_count == 24 and info.audio is not None
    text = outputs_text(notebook)
    assert "pasted.yaml: ok: 'pipeline test'" in text
    assert "<video" in text  # shown inline
    assert "SEND_TO_USER_INBOX" in text
    (task,) = logged_in_tiktok.tasks.values()
    assert task.kind == "inbox" and task.received == video.stat().st_size


def test_a_bad_storyboard_stops_the_notebook_with_its_line(tmp_path: Path, tiny_model_dir):
    notebook = with_fields(INSTALL=False, CHECKOUT=str(CHECKOUT), MODELS="tiny",
                           STORYBOARD=PASTED.replace("fps: 24", "fps: 999"))  # fmt: skip
    try:
        run_notebook(notebook, tmp_path)
    except CellExecutionError as error:
        message = str(error)
    else:
        raise AssertionError("the notebook went on past a bad storyboard")
    assert "pasted.yaml:3: fps: 999 is out of range" in message
    assert not (tmp_path / "outputs").exists()  # nothing rendered
