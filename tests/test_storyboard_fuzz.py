"""Random storyboards and random edits of the examples give a clean error or a valid plan,
never an unhandled exception."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import StoryboardError
from pipeline.run import load as load_story
from pipeline.schedule import build_plan, frame_count
from pipeline.storyboard import KEYFRAME_KEYS, RENDER_KEYS, TOP_KEYS, parse_storyboard

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "storyboards").glob("*.yaml"))

WORDS = [
    "0s", "1s", "2.5s", "-1s", "0:01.5", "0:99", "24f", "beat 1", "beat 0", "beat 999",
    "sin(t)", "1.01 + 0.04 * beat", "max(1, 2)", "t.real", "9**9**9", "log(t)", "1 -",
    "1080x1920", "288x512", "100x100", "linear", "hold", "ease-in-out", "wobble", "",
    "a hallway", "true", "1e999", "nan", "__import__('os')", "x" * 40,
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=12),
)


def values(depth: int = 2):
    if depth == 0:
        return scalars
    inner = values(depth - 1)
    return st.one_of(
        scalars,
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(WORDS + list(KEYFRAME_KEYS)), inner, max_size=3),
    )


keyframe = st.dictionaries(
    st.one_of(st.sampled_from(KEYFRAME_KEYS), st.text(max_size=6)), values(1), max_size=6
)
document = st.fixed_dictionaries(
    {},
    optional={
        **{key: values(1) for key in TOP_KEYS if key not in ("keyframes", "render")},
        "render": st.dictionaries(st.sampled_from(RENDER_KEYS), values(0), max_size=4),
        "keyframes": st.lists(keyframe, max_size=4),
        "typo": values(0),
    },
)


def check(board_bytes: bytes, path: Path) -> None:
    try:
        board = parse_storyboard(board_bytes, path)
        plan = build_plan(board, None)
    except StoryboardError as error:
        assert str(error).startswith(str(path))
        return
    assert plan.n_frames == frame_count(plan.duration, board.fps) >= 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document)
def test_random_documents(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("fuzz") / "board.yaml"
    check(yaml.safe_dump(doc, allow_unicode=True).encode(), path)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_bytes(tmp_path_factory, data):
    check(data, tmp_path_factory.mktemp("fuzz") / "board.yaml")


def mutate(lines: list[str], data: st.DataObject) -> list[str]:
    lines = list(lines)
    for _ in range(data.draw(st.integers(1, 3))):
        if not lines:
            break
        i = data.draw(st.integers(0, len(lines) - 1))
        kind = data.draw(st.sampled_from(["delete", "duplicate", "swap", "replace", "indent"]))
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "swap":
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "indent":
            lines[i] = data.draw(st.sampled_from(["", "  ", "    ", "\t"])) + lines[i].lstrip()
        else:
            head, sep, _ = lines[i].partition(":")
            word = data.draw(st.sampled_from(WORDS) | st.text(max_size=8))
            lines[i] = f'{head}{sep} "{word}"' if sep else word
    return lines


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(EXAMPLES), st.data())
def test_mutated_examples(tmp_path_factory, example, data):
    # The examples with their soundtracks, so mutations reach audio analysis and beats too.
    root = tmp_path_factory.mktemp("mutant")
    (root / "storyboards").mkdir()
    (root / "audio").symlink_to(REPO / "audio")
    (root / "storyboards" / "pictures").symlink_to(REPO / "storyboards" / "pictures")
    lines = mutate(example.read_text().splitlines(), data)
    path = root / "storyboards" / example.name
    path.write_text("\n".join(lines) + "\n")
    try:
        board, _, plan = load_story(str(path))
    except StoryboardError as error:
        assert str(error).startswith(str(path))
        return
    assert plan.n_frames == frame_count(plan.duration, board.fps)


def test_the_examples_exist():
    assert len(EXAMPLES) >= 4
