"""The checkpoint writer (mxfp4lab.synthetic.write_synthetic over mxfp4lab.checkpoints.writer) loses
nothing: it refuses a non-empty target unless told to overwrite, overwrites exactly its own files, writes
atomically, and leaves no stale index, shard or origin behind.

Data loss before: a sharded seed-1 checkpoint overwritten unsharded with seed 2 still read as seed 1 (the
stale index won); another model's checkpoint and a user's .safetensors were replaced without a flag; the old
origin and old shards stayed."""

import os

import pytest
import torch
from bad_inputs import Bad, check
from safetensors.torch import save_file

from mxfp4lab.checkpoints import CheckpointError, open_checkpoint, read_gpt_oss_layer, read_origin, writer
from mxfp4lab.checkpoints.writer import MANIFEST_FILENAME
from mxfp4lab.models import DSV4_FLASH, GPT_OSS_20B
from mxfp4lab.synthetic import write_synthetic
from mxfp4lab.validate import InputError

GPT = GPT_OSS_20B.scaled(hidden=64, intermediate=96, experts=4)
DSV4 = DSV4_FLASH.scaled(hidden=64, intermediate=32, experts=8)


def snapshot(d):
    """{relative path: bytes} of everything under d (what must survive a refused or failed write)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def gpt_dir(tmp_path, **kw):
    return write_synthetic(tmp_path / "ck", GPT, scale_rule="ocp", **kw)


def user_file(tmp_path):
    save_file({"mine": torch.ones(3)}, str(tmp_path / "mine.safetensors"))
    return tmp_path / "mine.safetensors"


def foreign_dir(tmp_path):
    d = tmp_path / "theirs"
    d.mkdir()
    save_file({"w": torch.ones(3)}, str(d / "model.safetensors"))
    return d


def nothing(t):
    return None


def ws(path, cfg=GPT, **kw):
    """write_synthetic(tmp_path / path, ...) as a row's write step."""
    return lambda t: write_synthetic(t / path if isinstance(path, str) else path(t), cfg,
                                     **{"scale_rule": "ocp", **kw})


def extra_in(t):
    gpt_dir(t)
    save_file({"x": torch.ones(1)}, str(t / "ck" / "extra.safetensors"))


#: (setup(tmp_path), the refused write) -> error; the whole tmp_path must be unchanged by the write
WRITE = [
    (gpt_dir, Bad("existing mxfp4lab checkpoint, no flag", ws("ck", seed=2), CheckpointError,
                  ["is not empty", "overwrite=True"])),
    (gpt_dir, Bad("another model's checkpoint, no flag", ws("ck", DSV4, layers=(3,)), CheckpointError,
                  ["is not empty", "overwrite=True"])),
    (user_file, Bad("a user's .safetensors file, no flag", ws("mine.safetensors"), CheckpointError,
                    ["mine.safetensors exists", "overwrite=True"])),
    (foreign_dir, Bad("a checkpoint mxfp4lab did not write, even with the flag", ws("theirs", overwrite=True),
                      CheckpointError, ["refusing to overwrite", "model.safetensors", f"no {MANIFEST_FILENAME}"])),
    (extra_in, Bad("a user's file inside an mxfp4lab checkpoint directory", ws("ck", overwrite=True),
                   CheckpointError, ["extra.safetensors", "does not list"])),
    (gpt_dir, Bad("a new file inside an mxfp4lab checkpoint directory", ws("ck/more.safetensors"), CheckpointError,
                  ["checkpoint directory", "ambiguous"])),
    (lambda t: (t / "f").write_text("x"), Bad("target is a file", ws("f"), CheckpointError,
                                               ["exists and is not a directory"])),
    (lambda t: (t / "d.safetensors").mkdir(), Bad("file target is a directory", ws("d.safetensors"), CheckpointError,
                                                  ["is a directory"])),
    (nothing, Bad("origin with a single-file target", ws("a.safetensors", save_origin=True), ValueError,
                  ["save_origin needs a directory"])),
    (nothing, Bad("shards with a single-file target", ws("a.safetensors", max_shard_bytes=10), ValueError,
                  ["needs a directory"])),
    (nothing, Bad("max_shard_bytes 0", ws("a", max_shard_bytes=0), ValueError, ["max_shard_bytes must be a positive int"])),
    (nothing, Bad("negative layer", ws("a", layers=(-1,)), ValueError, ["layers must be ints >= 0", "-1"])),
    (nothing, Bad("layer past num_layers", ws("a", layers=(24,)), ValueError, ["< num_layers = 24"])),
    (nothing, Bad("no layers", ws("a", layers=()), ValueError, ["at least one layer"])),
    (nothing, Bad("duplicate layers", ws("a", layers=(1, 1)), ValueError, ["duplicates"])),
    (nothing, Bad("NaN std (NaN weights before)", ws("a", std=float("nan")), InputError, ["std must be finite"])),
    (nothing, Bad("std 0 (all-zero weights before)", ws("a", std=0.0), InputError, ["std must be > 0"])),
    (nothing, Bad("negative seed", ws("a", seed=-1), ValueError, ["seed must be a non-negative int"])),
    (nothing, Bad("config a name", ws("a", "gpt-oss-20b"), TypeError, ["MoEConfig"])),
]


@pytest.mark.parametrize("setup, row", WRITE, ids=[r.id for _, r in WRITE])
def test_refused_write_changes_nothing(setup, row, tmp_path):
    setup(tmp_path)
    before = snapshot(tmp_path)
    check(Bad(row.id, lambda: row.call(tmp_path), row.error, row.words))
    assert snapshot(tmp_path) == before and not leftovers(tmp_path)


def test_overwrite_replaces_a_sharded_checkpoint_and_its_origin(tmp_path):
    """The issue's case: sharded seed 1 (with origin), then unsharded seed 2 on the same directory."""
    first = gpt_dir(tmp_path, seed=1, max_shard_bytes=2000, save_origin=True)
    assert len(first.files) > 2 and first.index is not None
    second = gpt_dir(tmp_path, seed=2, overwrite=True)
    fresh = write_synthetic(tmp_path / "fresh", GPT, scale_rule="ocp", seed=2)
    got, want = read_gpt_oss_layer(second.path, 0, GPT), read_gpt_oss_layer(fresh.path, 0, GPT)
    for f in ("gate_up_blocks", "gate_up_scales", "down_blocks", "down_scales", "gate_up_bias", "down_bias"):
        assert torch.equal(getattr(got, f), getattr(want, f)), f
    # no old shard, index or origin: the new write's tensors, its config.json and its manifest
    assert sorted(os.listdir(second.path)) == sorted(["config.json", "model.safetensors", MANIFEST_FILENAME])
    with pytest.raises(CheckpointError, match="no origin file"):
        read_origin(second.path, 0)
    assert not leftovers(tmp_path)


def test_overwrite_keeps_what_is_not_the_checkpoints(tmp_path):
    gpt_dir(tmp_path, max_shard_bytes=3000)
    (tmp_path / "ck" / "NOTES.md").write_text("my notes")
    (tmp_path / "ck" / "plots").mkdir()
    (tmp_path / "ck" / "plots" / "a.png").write_bytes(b"png")
    res = write_synthetic(tmp_path / "ck", DSV4, scale_rule="ocp", layers=(3,), overwrite=True)  # another model
    assert (res.path / "NOTES.md").read_text() == "my notes" and (res.path / "plots" / "a.png").read_bytes() == b"png"
    assert open_checkpoint(res.path).files == res.files
    assert all(f.parent == res.path and f.exists() for f in res.files)


def test_overwrite_of_a_named_file_replaces_that_file_only(tmp_path):
    mine = user_file(tmp_path)
    (tmp_path / "other.txt").write_text("keep")
    res = write_synthetic(mine, GPT, scale_rule="ocp", overwrite=True)
    assert res.path == mine and "mine" not in open_checkpoint(mine)
    assert (tmp_path / "other.txt").read_text() == "keep" and not leftovers(tmp_path)


def test_a_failed_write_leaves_the_target_as_it_was(tmp_path, monkeypatch):
    first = gpt_dir(tmp_path, seed=1, max_shard_bytes=2000, save_origin=True)
    before = snapshot(first.path)
    real, calls = writer.save_file, []

    def failing(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(writer, "save_file", failing)
    with pytest.raises(OSError, match="No space left"):
        gpt_dir(tmp_path, seed=2, max_shard_bytes=2000, overwrite=True)
    assert snapshot(first.path) == before and not leftovers(tmp_path)
    monkeypatch.setattr(writer, "save_file", real)
    assert torch.equal(read_gpt_oss_layer(first.path, 0, GPT).down_blocks,
                       read_gpt_oss_layer(gpt_dir(tmp_path / "again", seed=1).path, 0, GPT).down_blocks)


def test_empty_target_directory_is_used(tmp_path):
    (tmp_path / "empty").mkdir()
    res = write_synthetic(tmp_path / "empty", GPT, scale_rule="ocp")
    assert res.path == tmp_path / "empty" and (res.path / MANIFEST_FILENAME).exists()
