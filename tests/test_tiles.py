"""Named tiles (mxfp4lab.kernels.tiles): the table's structure, its recorded form, bad tiles."""

import pytest

from mxfp4lab.kernels.tiles import INTERPRET_TILE, TILE_TABLE, DequantPath, TileConfig, bucket_of, table_tiles
from mxfp4lab.models import STUDY_SHAPES, get_model


def test_every_bucket_starts_with_the_explicit_decode_and_fits_every_study_shape():
    for b, tiles in TILE_TABLE.items():
        assert tiles[0].dequant == DequantPath.EXPLICIT, b  # tune() compares candidates with it
        assert len(set(tiles)) == len(tiles), f"bucket {b} repeats a tile"
        for t in tiles:
            for shape in STUDY_SHAPES:
                cfg = get_model(shape)
                t.check(cfg.padded_hidden, cfg.padded_intermediate)
            if t.dequant.swap_ab:  # wgmma's M is BLOCK_N: at least 64 rows per warpgroup
                assert t.block_n1 >= 64 and t.block_n2 >= 64, t.label
    assert [bucket_of(m) for m in (1, 16, 17, 64, 65, 2048, 2049, 1 << 20)] == [
        16, 16, 64, 64, 512, 2048, 1 << 62, 1 << 62]


def test_recorded_form_round_trips_and_paths_are_named():
    for t in table_tiles() + [INTERPRET_TILE]:
        assert TileConfig.from_list(t.as_list()) == t
    assert [p.value for p in DequantPath] == [0, 2, 3, 4]  # 1 (tl.dot_scaled) is not a path
    assert DequantPath.SWAP_AB_PTX.under_interpreter() == DequantPath.SWAP_AB_EXPLICIT
    assert DequantPath.PTX.under_interpreter() == DequantPath.EXPLICIT
    with pytest.raises(ValueError, match="1 is not a valid DequantPath"):
        TileConfig(16, 64, 128, 64, 128, 4, 4, 1)
    with pytest.raises(ValueError, match="block_k1 = 48 must be a positive multiple of 32"):
        TileConfig(16, 64, 48, 64, 128).check(256, 256)
    with pytest.raises(ValueError, match="does not divide the padded shape"):
        TileConfig(16, 96, 128, 64, 128).check(256, 256)
