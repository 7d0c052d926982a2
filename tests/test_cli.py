"""The command line's parser: `feverdream` alone shows the help, and every argument says what
it is."""

from __future__ import annotations

import re

import pytest

from pipeline.cli import main


def test_feverdream_without_a_verb_prints_the_help(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("usage: feverdream"), captured
    for verb in ("validate", "plan", "render", "score"):
        assert re.search(rf"^ +{verb} +\S", captured.out, re.M), captured.out
    assert captured.err == ""


@pytest.mark.parametrize("verb", ["validate", "plan", "render"])
def test_the_storyboard_argument_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exited:
        main([verb, "--help"])
    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    assert re.search(r"^ +storyboard +the storyboard, a YAML file", help_text, re.M), help_text


@pytest.mark.parametrize("group, action", [("models", "download"), ("tiktok", "login")])
def test_a_group_without_its_action_prints_its_help(group, action, capsys):
    assert main([group]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith(f"usage: feverdream {group}"), captured
    assert re.search(rf"^ +{action} +\S", captured.out, re.M), captured.out
    assert captured.err == ""


def test_without_taming_the_vqgan_says_how_to_install_it(monkeypatch):
    import importlib
    import sys

    from pipeline.errors import ModelError

    for name in [n for n in sys.modules if n.split(".")[0] in ("taming", "pipeline")]:
        if name.split(".")[0] == "taming" or name == "pipeline.models.vqgan":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "taming", None)  # as if it were not installed
    with pytest.raises(ModelError, match=r"pip install --no-deps taming-transformers-rom1504"):
        importlib.import_module("pipeline.models.vqgan")


def test_without_its_web_server_the_studio_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the extra were not installed
    assert main(["studio", str(tmp_path), "--no-browser"]) == 1
    assert "pip install 'feverdream[studio]'" in capsys.readouterr().err
