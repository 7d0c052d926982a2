"""feverdream installed as a user installs it: `pip wheel .` builds a wheel that carries what
the package needs at run time (the studio's page, the font, the shapes models, the example
storyboards and soundtracks); installed into an environment that already has another torch,
it leaves that torch alone; and from that wheel, outside the checkout, the examples come out
and the shapes demo renders its video."""

from __future__ import annotations

import hashlib
import subprocess
import zipfile
from pathlib import Path

from colab_env import (
    CHECKOUT,
    TORCH,
    make_venv,
    offline,
    own_packages,
    pip,
)

from pipeline import examples
from pipeline.check import probe_video
from pipeline.models.catalogue import SHAPES, find_entry
from pipeline.storyboard import files_named


def test_the_wheel_carries_the_page_the_font_the_shapes_models_and_the_examples(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for static in ("index.html", "studio.js", "studio.css"):
            assert f"pipeline/studio/static/{static}" in names
        for example in ("example.yaml", "example-shapes.yaml"):
            assert f"pipeline/studio/{example}" in names
        assert "pipeline/assets/DejaVuSans-Bold.ttf" in names
        for kind in ("vqgan", "clip"):
            for file in find_entry(kind, SHAPES).files:
                data = archive.read(f"pipeline/assets/models/{file.filename}")
                assert hashlib.sha256(data).hexdigest() == file.sha256
        folder = f"pipeline/{examples.PACKAGED}/"
        packaged = {name.removeprefix(folder) for name in names if name.startswith(folder)}
    assert packaged == {str(path) for path in examples.files()}
    assert {"storyboards/demo-shapes.yaml", "audio/adhd.wav", "storyboards/pictures/red-circle.png"
            } <= packaged  # fmt: skip


def test_feverdream_installs_beside_another_torch_without_replacing_it(
    tmp_path: Path, wheel: Path, wheelhouse: Path
):
    """Colab's case: torch is there first, at a release other than our pin (2.13.0, the CPU
    build on this machine's disk), with its torchvision."""
    python = make_venv(tmp_path / "venv", without=TORCH)
    pip(python, "install", "-q", "--no-compile", "torch==2.13.0", "torchvision==0.28.0")
    before = pip(python, "list", "--format=freeze")
    assert "torch==2.13.0" in before
    install(python, wheel, wheelhouse)
    after = pip(python, "list", "--format=freeze")
    torches = [line for line in after.splitlines() if line.startswith(("torch=", "torchvision="))]
    assert torches == ["torch==2.13.0+cpu", "torchvision==0.28.0"], after
    assert "feverdream==0.1.0" in after


def install(python: Path, wheel: Path, wheelhouse: Path) -> None:
    """As the README says: the wheel, then taming-transformers without its Lightning stack;
    offline, from the wheelhouse."""
    pip(python, "install", "-q", "--no-compile", str(wheel), env=offline(wheelhouse))
    pip(python, "install", "-q", "--no-compile", "--no-deps", "taming-transformers-rom1504==0.0.6",
        env=offline(wheelhouse))  # fmt: skip


def test_from_the_wheel_outside_the_checkout_the_examples_come_out_and_the_demo_renders(
    tmp_path: Path, wheel: Path, wheelhouse: Path
):
    python = make_venv(tmp_path / "venv")
    install(python, wheel, wheelhouse)
    added = own_packages(python)
    assert {"pipeline", "open_clip", "taming"} <= added and not added & TORCH
    feverdream = python.parent / "feverdream"
    work = tmp_path / "work"
    work.mkdir()

    def run(*args: str) -> str:
        done = subprocess.run([str(feverdream), *args], cwd=work, capture_output=True, text=True,
                              env=offline(wheelhouse))  # fmt: skip
        assert done.returncode == 0, f"feverdream {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    assert "feverdream render storyboards/demo-shapes.yaml" in run("examples", ".")
    assert (work / "audio" / "adhd.wav").read_bytes() == (CHECKOUT / "audio/adhd.wav").read_bytes()
    named = {(board, written) for board in sorted((work / "storyboards").glob("*.yaml"))
             for _, written in files_named(board.read_bytes(), board)}  # fmt: skip
    assert len(named) >= 9  # a soundtrack each, and shapes-pictures' three pictures
    assert all((board.parent / written).is_file() for board, written in named), named
    # Its first two seconds, previewed: the models, the soundtrack, the font and ffmpeg all
    # come from the installed wheel (the whole demo is `make demo`'s, a minute and a half).
    out = run("render", "storyboards/demo-shapes.yaml", "--preview", "--frames", "0:48")
    folder = work / "outputs" / "demo-shapes" / "preview" / "frames-0-48"
    video = folder / "demo-shapes-0-48.mp4"
    assert f"video: {video.relative_to(work)}" in out
    info = probe_video(video)
    assert info.frame_count == 48 and info.audio is not None


def test_examples_never_overwrite_a_file_of_the_users(tmp_path: Path, capsys):
    from pipeline.cli import main

    mine = tmp_path / "storyboards" / "anxiety.yaml"
    mine.parent.mkdir()
    mine.write_text("title: my own anxiety\n")
    assert main(["examples", str(tmp_path)]) == 0
    assert mine.read_text() == "title: my own anxiety\n"
    said = capsys.readouterr().out
    assert f"kept your {mine}" in said
    assert f"feverdream render {tmp_path}/storyboards/demo-shapes.yaml" in said
    assert (tmp_path / "storyboards" / "pictures" / "red-circle.png").is_file()
    assert main(["examples", str(tmp_path)]) == 0  # again: nothing to write, nothing lost
    assert "0 files written" in capsys.readouterr().out


def test_examples_into_a_folder_that_cannot_be_made_say_so(tmp_path: Path, capsys):
    from pipeline.cli import main

    taken = tmp_path / "a-file"
    taken.write_text("not a folder")
    assert main(["examples", str(taken)]) == 1
    err = capsys.readouterr().err
    assert f"error: cannot write {taken}/" in err and "choose a folder you can write to" in err
