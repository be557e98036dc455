"""Physical layouts, one module per layout x arch, each a transform of the logical tensors
(:mod:`mxfp4lab.moe_tensors`) with its exact inverse.

* :mod:`.sm90_weights`  -- SM90 CUTLASS FP4 weight interleave (16x64 tiles, 32-bit lane words, bit permutation)
* :mod:`.sm90_scales`   -- SM90 CUTLASS E8M0 scale fold (64x128 blocks -> 16 rows of 16 bytes)
* :mod:`.sm90_moe`      -- a whole layer in the SM90 CUTLASS layout (:class:`Sm90MoE`, FlashInfer's backend)
* :mod:`.triton_w4a16`  -- mxfp4lab's Triton kernel layout (N-major transpose)
* :mod:`.explain`       -- element <-> physical bit/byte lookups of the SM90 layout, for teaching and plots
"""

from .explain import (
    CODE_BIT_NAMES,
    scale_destination,
    scale_source,
    weight_bit_source,
    weight_element_destination,
)
from .sm90_moe import Sm90MoE, from_sm90, to_sm90
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
    "Sm90MoE",
    "deinterleave_weights_sm90",
    "fold_scales_sm90",
    "from_sm90",
    "interleave_weights_sm90",
    "permute_word_bits",
    "scale_destination",
    "scale_source",
    "to_sm90",
    "unfold_scales_sm90",
    "weight_bit_source",
    "weight_element_destination",
]
