"""Real MXFP4 MoE checkpoint layouts: a lazy, validated reader plus one module per format.

* :mod:`.reader`  -- :func:`open_checkpoint` (one file, shards, or an index.json; headers only),
  :class:`Checkpoint`, :class:`CheckpointError`, the header checks both formats use
* :mod:`.gpt_oss` -- GPT-OSS names, shapes, :class:`GptOssExperts`, :func:`read_gpt_oss_layer`
* :mod:`.dsv4`    -- DeepSeek-V4 names, shapes, :class:`Dsv4Experts`, :func:`read_dsv4_layer`
* :mod:`.writer`  -- size-limited shards + index, the origin file beside a synthetic checkpoint

Synthetic checkpoints (origin weights, quantized, written in the real layout): :mod:`mxfp4lab.synthetic`.
"""

from .dsv4 import Dsv4Experts, dsv4_expert_names, dsv4_expert_shapes, dsv4_gate_names, read_dsv4_layer
from .gpt_oss import GptOssExperts, gpt_oss_names, gpt_oss_shapes, read_gpt_oss_layer
from .reader import (
    INDEX_FILENAME,
    ORIGIN_FILENAME,
    Checkpoint,
    CheckpointError,
    CheckpointScaleError,
    open_checkpoint,
)
from .writer import read_origin

__all__ = [
    "INDEX_FILENAME",
    "ORIGIN_FILENAME",
    "Checkpoint",
    "CheckpointError",
    "CheckpointScaleError",
    "Dsv4Experts",
    "GptOssExperts",
    "dsv4_expert_names",
    "dsv4_expert_shapes",
    "dsv4_gate_names",
    "gpt_oss_names",
    "gpt_oss_shapes",
    "open_checkpoint",
    "read_dsv4_layer",
    "read_gpt_oss_layer",
    "read_origin",
]
