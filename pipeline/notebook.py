"""What notebooks/feverdream.ipynb calls, one function a cell: the notebook itself holds no
logic, so a Colab user and the command line get the same checks, errors and renders.

A failure stops the notebook with its one-line message (no traceback to scroll through), as
the command line prints it: `Stop` is shown by IPython as just that message.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import run
from pipeline.errors import FeverdreamError, NotLoggedIn

Say = Callable[[str], None]


class Stop(FeverdreamError):
    """A problem the user fixes in the form above; shown without a traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook for how an error is shown
        return [f"error: {self}"]


def storyboard(
    example: str = "", text: str = "", folder: str | Path = ".", say: Say = print
) -> Path:
    """The storyboard to render: the pasted `text`, written to FOLDER/pasted.yaml (so the
    soundtrack and pictures it names are looked for beside it), else the named example, copied
    with the others, their pictures and soundtracks into FOLDER/feverdream-examples/."""
    if text.strip():
        path = Path(folder) / "pasted.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        # The form's STORYBOARD = """ ends its line: the text's first line is the next one.
        path.write_text(text.removeprefix("\n"), encoding="utf-8")
        return path
    found = run.example_storyboards()
    if example not in found:
        raise Stop(f"no example named {example!r}: choose one of {', '.join(found)}")
    copied = run.copy_examples(Path(folder) / "feverdream-examples")
    for path in copied.kept:
        say(f"kept your edited {path} (remove it to get the example back)")
    return copied.folder / "storyboards" / found[example].name


def check(path: str | Path, say: Say = print) -> run.Story:
    """Validate as `feverdream validate` does: the storyboard, its soundtrack, its plan. Files
    it names that are not there yet (a pasted storyboard's soundtrack or pictures) are listed
    first, each with the folder to upload it to."""
    path = Path(path)
    if not path.is_file():
        raise Stop(f"{path} is not here: upload it, or paste the storyboard into STORYBOARD")
    missing: dict[Path, list[str]] = {}  # file → the keys that name it
    for key, written in run.files_named(path.read_bytes(), path):
        target = (path.parent / written).resolve()
        if not target.is_file():
            missing.setdefault(target, []).append(key)
    if missing:
        lines = [f"  {file.name}  into  {file.parent}/  ({', '.join(keys)})"
                 for file, keys in missing.items()]  # fmt: skip
        raise Stop(
            "the storyboard names files that are not here yet; upload each (Files ▸ Upload, or "
            "drag it onto the file panel) into the folder shown, then run this cell again:\n"
            + "\n".join(lines)
        )
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

    options = _options(models)
    names = [run.model_name(story, options), *(n for n, _ in run.clip_names(story, options))]
    for name in dict.fromkeys(names):
        bar = tqdm(desc=name, unit="B", unit_scale=True, leave=False)

        def on_bytes(done: int, total: int | None, bar=bar) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            run.fetch_model(name, on_bytes)
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
                unit=progress.unit, unit_scale=progress.unit == "B",
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


def post_draft(video: str | Path, say: Say = print, ask: Callable[[str], str] = input) -> None:
    """Upload the video to the TikTok inbox (drafts take no caption: write it in the app when
    you post). With no login saved here, log in first without a browser on this machine: open
    the printed link on any device, then paste back the address TikTok sent that browser to.
    The TikTok app's key and secret come from the environment or, on Colab, its Secrets."""
    _colab_secrets()
    try:
        if not run.logged_in():
            run.login(paste=True, ask=ask, say=say)
        try:
            run.post(video, "draft", say=say)
        except NotLoggedIn as expired:  # expired, revoked or damaged: log in again, here
            say(f"{expired}; logging in again")
            run.login(paste=True, ask=ask, say=say)
            run.post(video, "draft", say=say)
    except FeverdreamError as error:
        raise Stop(str(error)) from None


def _colab_secrets() -> None:
    """TIKTOK_CLIENT_KEY and TIKTOK_CLIENT_SECRET from Colab's Secrets panel, where the
    environment does not set them and the user let this notebook read them."""
    try:
        from google.colab import userdata  # type: ignore[import-not-found]
    except ImportError:
        return
    for name in ("TIKTOK_CLIENT_KEY", "TIKTOK_CLIENT_SECRET"):
        if not os.environ.get(name):
            try:
                os.environ[name] = userdata.get(name)
            except Exception:  # noqa: BLE001 (not there, not allowed, timed out: by Colab version)
                pass  # the login then says which is missing and where it comes from


def _options(models: str, **values: Any) -> run.RenderOptions:
    chosen = models.strip() or None
    depth = chosen if chosen == run.TINY else None  # the tiny models include a depth model
    return run.RenderOptions(vqgan=chosen, clip=chosen, depth=depth, **values)
