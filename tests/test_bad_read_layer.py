"""Bad arguments of the layer readers (mxfp4lab.checkpoints.read_gpt_oss_layer / read_dsv4_layer) and of
read_origin (a stale origin beside another write's checkpoint). Files that lie: test_bad_open_checkpoint."""

import shutil

import pytest
from bad_inputs import Bad, check, ids

from mxfp4lab.checkpoints import CheckpointError, read_dsv4_layer, read_gpt_oss_layer, read_origin
from mxfp4lab.models import DSV4_FLASH, GPT_OSS_20B
from mxfp4lab.synthetic import write_synthetic

GPT = GPT_OSS_20B.scaled(hidden=64, intermediate=96, experts=4)
DSV4 = DSV4_FLASH.scaled(hidden=64, intermediate=32, experts=8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl")
    g = write_synthetic(root / "g", GPT, scale_rule="ocp", seed=1, save_origin=True)
    d = write_synthetic(root / "d", DSV4, scale_rule="ocp", layers=(3,))
    other = write_synthetic(root / "other", GPT, scale_rule="ocp", seed=2)
    stale = root / "stale"  # seed 2's checkpoint with seed 1's origin copied beside it
    shutil.copytree(other.path, stale)
    shutil.copy(g.origin_path, stale / "origin.safetensors")
    return {"g": g.path, "d": d.path, "stale": stale}


READ = [
    Bad("expert id a float", lambda f: read_gpt_oss_layer(f["g"], 0, GPT, experts=[1.5]), TypeError,
        ["expert id must be an int", "1.5"]),
    Bad("no experts", lambda f: read_gpt_oss_layer(f["g"], 0, GPT, experts=[]), CheckpointError,
        ["experts is empty"]),
    Bad("experts a string", lambda f: read_dsv4_layer(f["d"], 3, DSV4, experts="01"), TypeError,
        ["experts must be a sequence"]),
    Bad("expert id out of range", lambda f: read_dsv4_layer(f["d"], 3, DSV4, experts=[0, 8]), CheckpointError,
        ["expert ids [8] out of range 0..7"]),
    Bad("duplicate expert ids", lambda f: read_gpt_oss_layer(f["g"], 0, GPT, experts=[1, 1]), CheckpointError,
        ["duplicates"]),
    Bad("layer a string", lambda f: read_gpt_oss_layer(f["g"], "0", GPT), TypeError, ["layer must be an int"]),
    Bad("negative layer", lambda f: read_dsv4_layer(f["d"], -1, DSV4), CheckpointError, ["layer must be >= 0"]),
    Bad("no config", lambda f: read_gpt_oss_layer(f["g"], 0, None), TypeError, ["config", "MoEConfig"]),
    Bad("config of the other format", lambda f: read_gpt_oss_layer(f["g"], 0, DSV4), CheckpointError,
        ["checkpoint_format 'dsv4'"]),
    Bad("config with other shapes", lambda f: read_gpt_oss_layer(f["g"], 0, GPT.scaled(experts=8)),
        CheckpointError, ["expert count mismatch", "num_experts = 8"]),
]

ORIGIN = [
    Bad("stale origin (another write's)", lambda f: read_origin(f["stale"], 0), CheckpointError,
        ["does not belong to the checkpoint", "mxfp4lab.seed: origin '1', checkpoint '2'", "stale"]),
    Bad("no origin", lambda f: read_origin(f["d"], 3), CheckpointError, ["no origin file"]),
    Bad("layer not saved", lambda f: read_origin(f["g"], 5), CheckpointError, ["no tensors for layer 5"]),
]


@pytest.mark.parametrize("row", READ + ORIGIN, ids=ids)
def test_bad_input(row, files):
    check(Bad(row.id, lambda: row.call(files), row.error, row.words))


def test_a_matching_origin_reads(files):
    assert set(read_origin(files["g"], 0)) >= {"w_gate", "w_up", "w_down"}
