"""SM90 mixed-input layouts: one module per layout, each a transform with its exact inverse.

* :mod:`.sm90_weights` -- FP4 weight interleave (16x64 tiles, 32-bit lane words, bit permutation)
* :mod:`.sm90_scales`  -- E8M0 scale fold (64x128 blocks -> 16 rows of 16 bytes)
* :mod:`.explain`      -- element <-> physical bit/byte lookups for teaching and plots
"""

from .explain import (
    CODE_BIT_NAMES,
    scale_destination,
    scale_source,
    weight_bit_source,
    weight_element_destination,
)
from .sm90_scales import fold_scales_sm90, unfold_scales_sm90
from .sm90_weights import (
    SM90_FP4_BIT_PERM,
    SM90_FP4_BIT_PERM_INV,
    deinterleave_weights_sm90,
    interleave_weights_sm90,
    permute_word_bits,
)

__all__ = [
    "CODE_BIT_NAMES",
    "SM90_FP4_BIT_PERM",
    "SM90_FP4_BIT_PERM_INV",
    "deinterleave_weights_sm90",
    "fold_scales_sm90",
    "interleave_weights_sm90",
    "permute_word_bits",
    "scale_destination",
    "scale_source",
    "unfold_scales_sm90",
    "weight_bit_source",
    "weight_element_destination",
]
