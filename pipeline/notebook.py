"""What notebooks/feverdream.ipynb calls, one function a cell: the notebook itself holds no
logic, so a Colab user and the command line get the same checks, errors and renders.

A failure stops the notebook with its one-line message (no traceback to scroll through), as
the command line prints it: `Stop` is shown by IPython as just that message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import run
from pipeline.errors import FeverdreamError

Say = Callable[[str], None]


class Stop(FeverdreamError):
    """A problem the user fixes in the form above; shown without a traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook for how an error is shown
        return [f"error: {self}"]


def examples(checkout: str | Path) -> dict[str, Path]:
    """The example storyboards of a feverdream checkout, by name."""
    folder = Path(checkout) / "storyboards"
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def storyboard(
    checkout: str | Path, example: str = "", text: str = "", folder: str | Path = "."
) -> Path:
    """The storyboard to render: the pasted `text` (written to FOLDER/pasted.yaml, so its
    soundtrack and pictures are looked for beside it), else the named example."""
    if text.strip():
        path = Path(folder) / "pasted.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path
    found = examples(checkout)
    if example not in found:
        raise Stop(f"no example named {example!r}: choose one of {', '.join(found)}")
    return found[example]


def check(path: str | Path, say: Say = print) -> run.Story:
    """Validate as `feverdream validate` does: the storyboard, its soundtrack, its plan."""
    try:
        story = run.load(path)
    except FeverdreamError as error:
        raise Stop(f"{error}\n(fix the storyboard above and run this cell again)") from None
    say(f"{path}: {run.validated(story)}")
    return story


def fetch_models(story: run.Story, models: str = "", say: Say = print) -> None:
    """Download the models the render needs (`models` overrides the storyboard's, as the
    CLI's --models), with a progress bar per file; a dead link falls through to a mirror."""
    from tqdm.auto import tqdm

    from pipeline.models.download import ensure_downloaded

    options = _options(models)
    names = [run.model_name(story, options), *(n for n, _ in run.clip_names(story, options))]
    for name in dict.fromkeys(names):
        bar = tqdm(desc=name, unit="B", unit_scale=True, leave=False)

        def on_bytes(done: int, total: int | None, bar=bar) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            ensure_downloaded(name, on_bytes)
        except FeverdreamError as error:
            raise Stop(str(error)) from None
        finally:
            bar.close()
        say(f"model ready: {name}")


def render(
    story: run.Story,
    preview: bool = True,
    models: str = "",
    outputs: str | Path = "outputs",
) -> run.Rendered:
    """Render into OUTPUTS/NAME with a progress bar; a stopped or killed session continues
    where it was when the cell runs again (the frames are kept there)."""
    from tqdm.auto import tqdm

    bars: dict[str, Any] = {}

    def show(progress: run.Progress) -> None:
        bar = bars.get(progress.stage)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[progress.stage] = tqdm(
                total=progress.total or None, initial=progress.done, desc=progress.stage,
                unit="frame" if progress.stage != "download" else "B",
            )  # fmt: skip
        bar.update(progress.done - bar.n)
        if progress.loss is not None:
            bar.set_postfix(loss=f"{progress.loss:.3f}")

    options = _options(models, preview=preview, output=Path(outputs) / story.board.name)
    try:
        return run.render(story, options, on_progress=show)
    except FeverdreamError as error:
        raise Stop(str(error)) from None
    finally:
        for bar in bars.values():
            bar.close()


def show(video: str | Path, width: int = 270):
    """The video, inline (embedded, so it plays in Colab too)."""
    from IPython.display import Video

    return Video(str(video), embed=True, width=width, html_attributes="controls loop")


def download(path: str | Path):
    """Offer the file: Colab's download, else a link to it."""
    try:
        from google.colab import files  # type: ignore[import-not-found]
    except ImportError:
        from IPython.display import FileLink

        return FileLink(str(path))
    files.download(str(path))
    return None


def post_draft(video: str | Path, say: Say = print) -> None:
    """Upload the video to the TikTok inbox of the account logged in on this machine (`feverdream
    tiktok login`; on Colab, upload the token file it wrote where `tiktok whoami` says)."""
    try:
        run.post(video, "draft", say=say)
    except FeverdreamError as error:
        raise Stop(str(error)) from None


def _options(models: str, **values: Any) -> run.RenderOptions:
    chosen = models.strip() or None
    return run.RenderOptions(vqgan=chosen, clip=chosen, **values)
