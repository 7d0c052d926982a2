"""The model files users really download, as tests/real_checkpoints.py rebuilds them (taming's
Lightning 1.0.8 `last.ckpt` in torch 1.7's zip and pre-1.6 layouts, a later Lightning's
checkpoint, OpenAI's traced mixed-precision CLIP): each loads through the real loaders with
its weights intact and renders frames offline; whatever else a pickle holds is read as inert
data, and a pickle that would run code is refused as unsafe."""

from __future__ import annotations

import collections
import os
import textwrap
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from real_checkpoints import taming_state_dict, write_openai_clip, write_taming_vqgan
from test_models_loading import assert_same_weights, small_config, write_yaml

from pipeline import run
from pipeline.errors import ModelError
from pipeline.models.architectures import TINY_CLIP
from pipeline.models.checkpoint import Checkpoint, Opaque
from pipeline.models.clip import load_clip, random_clip
from pipeline.models.vqgan import load_vqgan, random_vqgan

VQGAN_KINDS = ["lightning-1.0.8", "lightning-1.0.8-legacy", "later-lightning"]


@pytest.fixture(scope="module")
def vqgan():
    return random_vqgan(small_config(), seed=21)


@pytest.fixture(scope="module")
def vqgan_files(vqgan, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("vqgans")
    return {kind: write_taming_vqgan(vqgan, folder, kind) for kind in VQGAN_KINDS}


@pytest.fixture(scope="module")
def clip():
    return random_clip(TINY_CLIP, seed=22)


@pytest.fixture(scope="module")
def clip_file(clip, tmp_path_factory) -> Path:
    return write_openai_clip(clip, tmp_path_factory.mktemp("clip") / "ViT-tiny.pt")


@pytest.mark.parametrize("kind", VQGAN_KINDS)
def test_a_taming_checkpoint_loads_with_its_weights_intact(vqgan, vqgan_files, kind):
    ckpt, config = vqgan_files[kind]
    assert_same_weights(load_vqgan(ckpt, config), vqgan)


def test_the_lightning_108_fixture_has_the_real_files_structure(vqgan_files):
    for kind in ("lightning-1.0.8", "lightning-1.0.8-legacy"):
        with Checkpoint(vqgan_files[kind][0]) as opened:
            root = opened.root
            keys = list(root)
            assert keys == [
                "epoch", "global_step", "pytorch-lightning_version", "callbacks",
                "optimizer_states", "lr_schedulers", "state_dict",
            ]  # fmt: skip
            assert root["pytorch-lightning_version"] == "1.0.8"
            ((callback, state),) = root["callbacks"].items()
            assert isinstance(callback, type) and issubclass(callback, Opaque)
            assert (
                callback.qualname == "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"
            )
            assert set(state) == {"best_model_score", "best_model_path"}
            assert len(root["optimizer_states"]) == 2
            tensors = root["state_dict"]
            assert any(k.startswith("loss.perceptual_loss.net.slice5.") for k in tensors)
            tracked = tensors["loss.discriminator.main.3.num_batches_tracked"]
            assert opened.tensor(tracked).dtype == torch.int64
            assert list(tensors._metadata)[0] == ""
    with Checkpoint(vqgan_files["later-lightning"][0]) as opened:
        hyper = opened.root["hyper_parameters"]
        assert hyper.qualname == "pytorch_lightning.utilities.parsing.AttributeDict"
        assert hyper.items["n_embed"] == 16 and hyper.items["ddconfig"].items["ch"] == 32
        progress = opened.root["loops"]["fit_loop"]["epoch_progress"]
        assert progress.qualname == "collections.defaultdict" and progress.items["total"] == 13


def test_openai_clip_loads_its_half_and_full_precision_weights(clip, clip_file):
    with Checkpoint(clip_file) as opened:
        assert opened.is_torchscript
        from pipeline.models.checkpoint import module_tensors

        dtypes = {name: ref.storage.dtype for name, ref in module_tensors(opened.root).items()}
    assert dtypes["visual.conv1.weight"] == dtypes["text_projection"] == torch.float16
    assert dtypes["transformer.resblocks.0.attn.in_proj_weight"] == torch.float16
    assert dtypes["ln_final.weight"] == dtypes["token_embedding.weight"] == torch.float32
    assert dtypes["logit_scale"] == dtypes["positional_embedding"] == torch.float32
    assert dtypes["input_resolution"] == torch.int64

    loaded = load_clip(clip_file)
    assert loaded.input_resolution == clip.input_resolution
    for name, want in clip.model.state_dict().items():
        got = loaded.model.state_dict()[name]
        expected = want.half().float() if dtypes[name] == torch.float16 else want
        assert torch.equal(got, expected), name


@pytest.mark.parametrize("kind", VQGAN_KINDS)
def test_frames_render_offline_from_the_real_formats(tmp_path, vqgan_files, clip_file, kind):
    ckpt, _ = vqgan_files[kind]
    board = tmp_path / "board.yaml"
    board.write_text(
        textwrap.dedent(
            f"""\
            title: real formats
            seed: 1
            fps: 24
            size: 1080x1920
            duration: 2f
            render: {{size: 144x256, steps: 1, first_steps: 2, cuts: 2}}
            models: {{vqgan: {ckpt}, clip: {clip_file}}}
            keyframes:
              - at: 0s
                prompt: "a red circle"
                zoom: 1.05
            """
        )
    )
    options = run.RenderOptions(output=tmp_path / "out", device="cpu", encode=False)
    result = run.render(board, options)
    assert result.frames_done == 2
    frames = sorted(result.frames_dir.glob("*.png"))
    assert [f.name for f in frames] == ["000000.png", "000001.png"]


# --- what else a pickle may hold ------------------------------------------------------------


class UntrustedDict(dict):
    """A dict subclass from a module the reader does not trust (like Lightning's)."""


class UntrustedList(list):
    """A list subclass from a module the reader does not trust."""


def test_every_kind_of_pickled_data_is_read_as_inert_data(tmp_path):
    vqgan = random_vqgan(small_config(), seed=23)
    state = OrderedDict(vqgan.state_dict())
    state._metadata = OrderedDict([("", {"version": 1})])
    untrusted_dict = UntrustedDict(alpha=1, beta=[2, 3])
    untrusted_dict.extra = "attribute"
    checkpoint = {
        "state_dict": state,
        "hyper_parameters": untrusted_dict,
        "history": UntrustedList([1, 2, 3]),
        "tags": {"a", "b"},
        "pair": (torch.ones(2), torch.zeros(3)),
        "score": np.float32(0.5),
        "table": np.arange(6).reshape(2, 3),
        "counts": collections.defaultdict(list, {"x": [1]}),
    }
    for protocol in (2, 4):
        ckpt = tmp_path / f"p{protocol}.ckpt"
        torch.save(checkpoint, ckpt, pickle_protocol=protocol)
        config = write_yaml(tmp_path / f"p{protocol}.yaml", vqgan.config.to_yaml())
        assert_same_weights(load_vqgan(ckpt, config), vqgan)
        with Checkpoint(ckpt) as opened:
            root = opened.root
            assert root["state_dict"]._metadata == {"": {"version": 1}}
            hyper = root["hyper_parameters"]
            assert isinstance(hyper, Opaque) and hyper.qualname.endswith("UntrustedDict")
            assert hyper.items == {"alpha": 1, "beta": [2, 3]}
            assert hyper.state == {"extra": "attribute"}
            assert root["history"].elements == [1, 2, 3]
            tags = root["tags"]
            assert tags == {"a", "b"} or (
                isinstance(tags, Opaque) and set(tags.args[0]) == {"a", "b"}
            )
            first, second = root["pair"]
            assert torch.equal(opened.tensor(first), torch.ones(2))
            assert torch.equal(opened.tensor(second), torch.zeros(3))
            assert isinstance(root["score"], Opaque) and isinstance(root["table"], Opaque)
            assert root["counts"].items == {"x": [1]}


class _Call:
    """Pickles as a call of `function` with `args`: what a malicious checkpoint does."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize(
    "payload",
    [
        lambda marker: _Call(os.system, f"touch {marker}"),
        lambda marker: _Call(eval, f"open({str(marker)!r}, 'w')"),
        lambda marker: _Call(__import__("subprocess").call, ["touch", str(marker)]),
        lambda marker: _Call(__import__("shutil").copy, __file__, str(marker)),
    ],
    ids=["os.system", "builtins.eval", "subprocess.call", "shutil.copy"],
)
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, payload):
    marker = tmp_path / "ran"
    ckpt = tmp_path / "evil.ckpt"
    vqgan = random_vqgan(small_config(), seed=24)
    torch.save({"state_dict": vqgan.state_dict(), "callbacks": [payload(marker)]}, ckpt)
    with pytest.raises(ModelError, match="is unsafe: reading it would call") as caught:
        load_vqgan(ckpt, write_yaml(tmp_path / "evil.yaml", vqgan.config.to_yaml()))
    assert "Do not use this file" in str(caught.value)
    assert not marker.exists()


def test_a_state_dict_of_the_right_kind_is_named_for_what_it_is(tmp_path, vqgan):
    # A taming state dict given as a CLIP says what it is.
    path = tmp_path / "vqgan-as-clip.pt"
    torch.save({"state_dict": taming_state_dict(vqgan)}, path)
    with pytest.raises(ModelError, match="it looks like a VQGAN checkpoint"):
        load_clip(path)
