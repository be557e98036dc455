"""Bad inputs of the checkpoint reader (mxfp4lab.checkpoints.open_checkpoint and the reads behind it):
files safetensors cannot parse, indexes that lie, a stale index beside a newer checkpoint.

Obscure or stale before: a raw SafetensorError naming no file, a list weight_map, a tensor mapped to the
wrong shard; a directory with a stale index returned the old tensors."""

import json
import shutil

import pytest
import torch
from bad_inputs import Bad, check
from safetensors.torch import save_file

from mxfp4lab.checkpoints import INDEX_FILENAME, CheckpointError, open_checkpoint, read_gpt_oss_layer
from mxfp4lab.checkpoints.writer import MANIFEST_FILENAME
from mxfp4lab.models import GPT_OSS_20B
from mxfp4lab.synthetic import write_synthetic
from mxfp4lab.validate import InputError

GPT = GPT_OSS_20B.scaled(hidden=64, intermediate=96, experts=4)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("ck") / "shards", GPT, scale_rule="ocp", max_shard_bytes=4000)


def copy(res, tmp_path, name="c"):
    d = tmp_path / name
    shutil.copytree(res.path, d)
    return d


def edit_index(d, fn):
    index = json.loads((d / INDEX_FILENAME).read_text())
    fn(index)
    (d / INDEX_FILENAME).write_text(json.dumps(index))
    return d


def truncated(res, tmp_path):
    d = copy(res, tmp_path)
    data = res.files[0].read_bytes()
    (d / res.files[0].name).write_bytes(data[: len(data) // 2])
    return d


def truncated_after_header(res, tmp_path):
    """The header parses; the data ends early."""
    d = copy(res, tmp_path)
    data = res.files[0].read_bytes()
    n = int.from_bytes(data[:8], "little") + 8
    (d / res.files[0].name).write_bytes(data[: n + 1])
    return d


def zero_bytes(res, tmp_path):
    d = copy(res, tmp_path)
    (d / res.files[1].name).write_bytes(b"")
    return d


def wrong_shard(res, tmp_path):
    d = copy(res, tmp_path)
    first, last = res.files[0].name, res.files[-1].name

    def swap(index):
        name = next(n for n, f in index["weight_map"].items() if f == first)
        index["weight_map"][name] = last
    return edit_index(d, swap)


def stale_index(res, tmp_path):
    """A sharded checkpoint's index beside a newer single-file checkpoint (what the writer once left)."""
    d = copy(res, tmp_path)
    (d / MANIFEST_FILENAME).unlink()
    shutil.copy(write_synthetic(tmp_path / "new.safetensors", GPT, scale_rule="ocp", seed=2).path,
                d / "model.safetensors")
    return d


def not_json(d):
    (d / INDEX_FILENAME).write_text("{oops")
    return d


def not_safetensors(res, tmp_path):
    p = tmp_path / "notes.safetensors"
    p.write_text("hello, not a checkpoint")
    return p


OPEN = [
    Bad("truncated shard", truncated, CheckpointError, ["cannot read safetensors file", "model-00001-of-"]),
    Bad("zero-byte shard", zero_bytes, CheckpointError, ["cannot read safetensors file", "model-00002-of-"]),
    Bad("text file named .safetensors", not_safetensors, CheckpointError, ["notes.safetensors", "cannot read"]),
    Bad("weight_map a list", lambda r, t: edit_index(copy(r, t), lambda i: i.update(weight_map=list(i["weight_map"]))),
        CheckpointError, ["weight_map must map tensor names to file names", "list"]),
    Bad("weight_map missing", lambda r, t: edit_index(copy(r, t), lambda i: i.pop("weight_map")), CheckpointError,
        ["cannot read weight_map", "KeyError"]),
    Bad("index not JSON", lambda r, t: not_json(copy(r, t)), CheckpointError, ["cannot read weight_map", INDEX_FILENAME]),
    Bad("tensor mapped to the wrong shard", wrong_shard, CheckpointError,
        ["maps tensor(s) to a shard that does not hold them", "model-000"]),
    Bad("shard path outside the directory", lambda r, t: edit_index(copy(r, t), lambda i: i["weight_map"].update(
        {next(iter(i["weight_map"])): "/etc/passwd"})), CheckpointError, ["a shard must be a file name"]),
    Bad("shard name a number", lambda r, t: edit_index(copy(r, t), lambda i: i["weight_map"].update(
        {next(iter(i["weight_map"])): 3})), CheckpointError, ["to 3"]),
    Bad("stale index beside a newer checkpoint", stale_index, CheckpointError,
        ["model.safetensors beside model.safetensors.index.json", "stale"]),
    Bad("missing path", lambda r, t: t / "nowhere", CheckpointError, ["does not exist"]),
]


@pytest.mark.parametrize("row", OPEN, ids=lambda r: r.id)
def test_bad_checkpoint(row, sharded, tmp_path):
    path = row.call(sharded, tmp_path)
    err = check(Bad(row.id, lambda: read_gpt_oss_layer(path, 0, GPT), row.error, row.words))
    assert isinstance(err, InputError)


def test_truncated_data_after_a_valid_header_names_tensor_and_file(sharded, tmp_path):
    d = truncated_after_header(sharded, tmp_path)
    with pytest.raises(CheckpointError, match="model-00001-of-") as info:
        read_gpt_oss_layer(d, 0, GPT)
    assert "cannot read" in str(info.value)


def test_unrelated_extra_files_do_not_matter(sharded, tmp_path):
    d = copy(sharded, tmp_path)
    (d / "README.md").write_text("notes")
    (d / "original").mkdir()  # e.g. the original weights in a subdirectory, as the GPT-OSS download has
    save_file({"x": torch.zeros(1)}, str(d / "original" / "model.safetensors"))
    names = lambda ck: {k: v.name for k, v in ck.weight_map.items()}
    assert names(open_checkpoint(d)) == names(open_checkpoint(sharded.path))
