"""Every kind of bad storyboard fails with exit status 2 and FILE:LINE: key: message."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile

from pipeline.cli import main

GOOD_KEYFRAMES = """\
keyframes:
  - at: 0s
    prompt: "a hallway"
  - at: 2s
    prompt: "a room"
"""


def validate(tmp_path: Path, text: str, capsys, name: str = "board.yaml") -> tuple[int, str]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    code = main(["validate", str(path)])
    captured = capsys.readouterr()
    return code, captured.err


def assert_error(tmp_path, capsys, text: str, line: int, key: str, *words: str) -> str:
    code, err = validate(tmp_path, text, capsys)
    assert code == 2, err
    assert f"board.yaml:{line}: {key}: " in err, err
    for word in words:
        assert word in err, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def click_track(tmp_path: Path) -> Path:
    """Four seconds of clicks at 120 bpm, the first at 0.5 s."""
    sr = 22050
    signal = np.zeros(4 * sr, dtype=np.float32)
    for start in np.arange(0.5, 4.0, 0.5):
        i = int(start * sr)
        signal[i : i + 400] = np.hanning(400) * np.sin(np.arange(400) * 0.6)
    path = tmp_path / "clicks.wav"
    soundfile.write(path, signal, sr)
    return path


def test_a_valid_storyboard_passes(tmp_path, capsys):
    code, err = validate(tmp_path, GOOD_KEYFRAMES, capsys)
    assert code == 0, err


def test_unknown_key_suggests_the_nearest(tmp_path, capsys):
    assert_error(tmp_path, capsys, "titel: x\n" + GOOD_KEYFRAMES, 1, "titel", "'title'")
    text = GOOD_KEYFRAMES.replace('    prompt: "a room"', '    prompt: "a room"\n    zom: 1.1')
    assert_error(tmp_path, capsys, text, 6, "keyframes[2].zom", "'zoom'")


def test_wrong_types(tmp_path, capsys):
    assert_error(tmp_path, capsys, "fps: fast\n" + GOOD_KEYFRAMES, 1, "fps", "whole number")
    text = GOOD_KEYFRAMES.replace('    prompt: "a room"', '    prompt: "a room"\n    zoom: [1, 2]')
    assert_error(tmp_path, capsys, text, 6, "keyframes[2].zoom", "single value")
    text = GOOD_KEYFRAMES.replace('    prompt: "a room"', '    prompt: "a room"\n    cut: often')
    assert_error(tmp_path, capsys, text, 6, "keyframes[2].cut", "true or false")
    assert_error(tmp_path, capsys, "render: 5\n" + GOOD_KEYFRAMES, 1, "render", "mapping")


def test_negative_time(tmp_path, capsys):
    text = GOOD_KEYFRAMES.replace("at: 2s", "at: -2s")
    assert_error(tmp_path, capsys, text, 4, "keyframes[2].at", "negative")


def test_times_out_of_order(tmp_path, capsys):
    text = GOOD_KEYFRAMES.replace("at: 2s", "at: 0:00.0")
    assert_error(tmp_path, capsys, text, 4, "keyframes[2].at", "time order")


def test_keyframe_after_duration(tmp_path, capsys):
    assert_error(tmp_path, capsys, "duration: 1s\n" + GOOD_KEYFRAMES, 5, "keyframes[2].at", "after")


def test_beat_without_audio(tmp_path, capsys):
    text = GOOD_KEYFRAMES.replace("at: 2s", "at: beat 4")
    assert_error(tmp_path, capsys, text, 4, "keyframes[2].at", "audio")


def test_beat_beyond_the_track(tmp_path, capsys, click_track):
    text = f"audio:\n  file: {click_track.name}\n" + GOOD_KEYFRAMES.replace("at: 2s", "at: beat 40")
    assert_error(tmp_path, capsys, text, 6, "keyframes[2].at", "only")


def test_render_size_not_multiple_of_16(tmp_path, capsys):
    text = "render:\n  size: 290x512\n" + GOOD_KEYFRAMES
    assert_error(tmp_path, capsys, text, 2, "render.size", "multiples of 16", "288x512")


def test_render_size_with_the_wrong_aspect(tmp_path, capsys):
    text = "render:\n  size: 512x512\n" + GOOD_KEYFRAMES
    assert_error(tmp_path, capsys, text, 2, "render.size", "aspect", "try 288x512")


def test_render_size_near_the_aspect_suggests_one_that_is_accepted(tmp_path, capsys):
    # 64x112 is 1.6% off 9:16; rounding its own sides would suggest 64x112 again.
    text = "render:\n  size: 64x112\n" + GOOD_KEYFRAMES
    assert_error(tmp_path, capsys, text, 2, "render.size", "aspect", "try 144x256")


def test_fps_out_of_range(tmp_path, capsys):
    assert_error(tmp_path, capsys, "fps: 20\n" + GOOD_KEYFRAMES, 1, "fps", "between 23 and 60")
    assert_error(tmp_path, capsys, "fps: 120\n" + GOOD_KEYFRAMES, 1, "fps", "between 23 and 60")


def test_output_side_out_of_range(tmp_path, capsys):
    assert_error(tmp_path, capsys, "size: 180x320\n" + GOOD_KEYFRAMES, 1, "size", "360 and 4096")
    assert_error(tmp_path, capsys, "size: 1080x1080\n" + GOOD_KEYFRAMES, 1, "size", "9:16")


def test_audio_file_missing(tmp_path, capsys):
    text = "audio:\n  file: nowhere.wav\n" + GOOD_KEYFRAMES
    assert_error(tmp_path, capsys, text, 2, "audio.file", "not found")


def test_audio_file_corrupt(tmp_path, capsys):
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    text = "audio:\n  file: noise.wav\n" + GOOD_KEYFRAMES
    assert_error(tmp_path, capsys, text, 2, "audio.file")


def test_audio_file_unreadable(tmp_path, capsys):
    (tmp_path / "empty.wav").write_bytes(b"")
    text = "audio:\n  file: empty.wav\n" + GOOD_KEYFRAMES
    assert_error(tmp_path, capsys, text, 2, "audio.file")


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("1.01 +", ["syntax error"]),
        ("1 + speed", ["unknown name 'speed'"]),
        ("sinus(t)", ["unknown function 'sinus'", "'sin'"]),
        ("t.real", ["attribute"]),
        ("t.__class__", ["attribute"]),
        ("9**9**9**9", ["too large"]),
        ("1e999", ["too large"]),
        ("log(t)", ["at 0.000s (frame 0)", "math domain error"]),
        ("beat", ["audio"]),
    ],
)
@pytest.mark.timeout(10)
def test_bad_expressions(tmp_path, capsys, expression, words):
    text = GOOD_KEYFRAMES.replace(
        '    prompt: "a room"', f'    prompt: "a room"\n    zoom: "{expression}"'
    )
    assert_error(tmp_path, capsys, text, 6, "keyframes[2].zoom", *words)


def test_expression_with_commas_works(tmp_path, capsys):
    text = GOOD_KEYFRAMES.replace(
        '    prompt: "a room"', '    prompt: "a room"\n    zoom: "max(1, min(2, 1 + t))"'
    )
    code, err = validate(tmp_path, text, capsys)
    assert code == 0, err


def test_zoom_must_stay_positive(tmp_path, capsys):
    text = GOOD_KEYFRAMES.replace('    prompt: "a room"', '    prompt: "a room"\n    zoom: "1 - t"')
    assert_error(tmp_path, capsys, text, 6, "keyframes[2].zoom", "greater than 0")


def test_empty_prompt(tmp_path, capsys):
    text = GOOD_KEYFRAMES.replace('prompt: "a room"', 'prompt: "  "')
    assert_error(tmp_path, capsys, text, 5, "keyframes[2].prompt", "empty")


def test_prompt_weights_all_zero(tmp_path, capsys):
    text = GOOD_KEYFRAMES.replace('prompt: "a room"', 'prompt: {"a room": 0, "a door": 0.0}')
    assert_error(tmp_path, capsys, text, 5, "keyframes[2].prompt", "all weights are 0")


def test_empty_keyframe_list(tmp_path, capsys):
    assert_error(tmp_path, capsys, "title: x\nkeyframes: []\n", 2, "keyframes", "empty")


def test_unknown_ease(tmp_path, capsys):
    text = GOOD_KEYFRAMES.replace('prompt: "a hallway"', 'prompt: "a hallway"\n    ease: easein')
    assert_error(tmp_path, capsys, text, 4, "keyframes[1].ease", "'ease-in'")


def test_file_not_utf8(tmp_path, capsys):
    path = tmp_path / "board.yaml"
    path.write_bytes(b"title: caf\xe9\n" + GOOD_KEYFRAMES.encode())
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "board.yaml:1: " in err and "UTF-8" in err


HALLWAY = '    prompt: "a hallway"\n'


@pytest.mark.parametrize(
    ("typo", "line", "words"),
    [
        # Each is reported at the line to fix; PyYAML's own mark is in the comment.
        # A closing quote missing: the text runs on to the next quote (PyYAML: line 5).
        (('"a hallway"', '"a hallway'), 3, ["runs on to line 5", "closing quote missing"]),
        # ...or to the end of the file (PyYAML: line 6, after the last line).
        (('"a room"', '"a room'), 5, ["never closed"]),
        # A bracket left open reads the next line into it (PyYAML: line 5).
        ((HALLWAY, HALLWAY + "    pan: [1, 2\n"), 4, ["']'", "[ that opens on line 4"]),
        ((HALLWAY, '    prompt: {"a hallway": 1, "a door": 0.5\n'), 3, ["'}'", "missing"]),
        # A key without its ':' (PyYAML: line 4, the next key).
        ((HALLWAY, '    prompt "a hallway"\n'), 3, ["expected ':'"]),
        # A ':' with no space after it makes one word that runs on (PyYAML: the next line).
        (("keyframes:", "seed:1\nkeyframes:"), 1, ["space after it"]),
        (("keyframes:", "title: x\nseed:1\nkeyframes:"), 2, ["space after it"]),
        (("- at: 2s", "- at:2s"), 4, ["space after it"]),
        # Where PyYAML was already right, it stays right.
        ((HALLWAY, HALLWAY + "   zoom: 1.1\n"), 4, ["expected <block end>"]),
        # ...after a prompt wrapped over two lines in its quotes, too (closed: not a typo).
        (
            (HALLWAY, '    prompt: "a hallway\n      at night"\n   zoom: 1.1\n'),
            5,
            ["expected <block end>"],
        ),
        (
            ("keyframes:", 'title: "a long\n  title"\n  seed: 1\nkeyframes:'),
            3,
            ["expected <block end>"],
        ),
        ((HALLWAY, '\tprompt: "a hallway"\n'), 3, ["'\\t'"]),
        ((HALLWAY, "    prompt: a hallway: at night\n"), 3, ["needs quotes"]),
        (("keyframes:", "title: 'what it's like'\nkeyframes:"), 1, ["apostrophe", "it''s"]),
    ],
)
def test_a_yaml_typo_is_reported_at_its_line(tmp_path, capsys, typo, line, words):
    text = GOOD_KEYFRAMES.replace(*typo)
    assert text != GOOD_KEYFRAMES
    code, err = validate(tmp_path, text, capsys)
    assert code == 2, err
    assert f"board.yaml:{line}: YAML syntax error: " in err, err
    for word in words:
        assert word in err, err


def test_missing_storyboard_file(tmp_path, capsys):
    code = main(["validate", str(tmp_path / "absent.yaml")])
    assert code == 2
    assert "absent.yaml: no such file" in capsys.readouterr().err


def test_errors_come_before_any_heavy_import(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("fps: 10\n" + GOOD_KEYFRAMES)
    script = (
        "import sys; from pipeline.cli import main; code = main(['validate', sys.argv[1]]); "
        "heavy = [m for m in ('torch', 'librosa', 'open_clip', 'matplotlib') if m in sys.modules]; "
        "print(heavy); sys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stdout.strip() == "[]"
    assert "bad.yaml:1: fps:" in result.stderr
    assert "Traceback" not in result.stderr
