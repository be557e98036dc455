"""Humming MXFP4 MoE (``humming-kernels`` 0.1.19, JIT-compiled): what vLLM is moving DeepSeek-V4 on SM90 to.

Humming is a GEMM library (``humming.layer.HummingMethod``); the MoE around it is the caller's. This backend
does what vLLM 0.26.0's ``HummingIndexedExperts`` does (``vllm/model_executor/layers/fused_moe/experts/
fused_humming_moe.py``; weights: ``vllm/model_executor/layers/quantization/utils/humming_utils.py``
``convert_to_humming_moe_kernel_format``), read from its source, not copied:

* weights, once per sublayer (``w13``, ``w2``): the checkpoint-schema tensors (:func:`humming_layout_from_logical`)
  go through the schema's ``convert_humming`` (``gpt_oss_mxfp4`` for GPT-OSS, ``mxfp4`` for
  DeepSeek-V4, as vLLM's mxfp4 oracle picks), then ``HummingMethod.prepare_layer_meta(pad_n_to_multiple=256,
  pad_k_to_multiple=128)`` and ``transform_humming_layer`` (Humming's own repack, on the GPU).
* forward (indexed GEMM): the (token, k) pairs are grouped by expert into blocks of the M-block size of
  the tuning entry Humming's heuristics pick for ``valid_shape_m = ceil(M * k * E_local / E)``
  (vLLM's ``prepare_humming_moe_kwargs``) -- with mxfp4lab's own graph-capturable alignment
  (:func:`mxfp4lab.kernels.triton_moe.align_pairs`, vLLM's ``moe_align_block_size`` layout: pair ids,
  padding = M*k); GEMM1 ``[M*k, 2I]`` bf16 (bias fused); clamped SwiGLU (one Triton kernel,
  :func:`mxfp4lab.backends.marlin.swiglu_packed`, where vLLM calls its ``swigluoai_and_mul`` /
  ``swiglu_limit_func`` ops); GEMM2 ``[M*k, H]`` bf16 (bias fused, top_k=1); the router-weighted sum over k
  in fp32 (mxfp4lab's combine kernel, as vLLM's ``moe_fused_mul_sum``).

Rounding points: GEMM1 output + bias -> bf16; SwiGLU in fp32 -> bf16; GEMM2 + bias -> bf16; fp32
weighted sum -> bf16 (``mode="kernel"``'s four, with the fc1 bias added before the first rounding).
DeepSeek-V4 is supported (Humming's plain ``mxfp4`` schema; vLLM PRs #52318 / #56997 move it there).

The GPU path needs ``humming`` importable (``scripts/gpu/stage-humming.sh`` stages the wheel) and nvcc
or NVRTC for its JIT (the first call of each kernel compiles it; cached under ``~/.cache``).
"""

from __future__ import annotations

import json
import math

import torch

from ..moe_tensors import LogicalMoE
from .base import MoEBackend
from .marlin import swiglu_packed
from .peer_layout import GATE_UP_HALVES, PeerLayout, logical_from_peer_layout, peer_layout_from_logical

#: ``_prepare_and_transform_sublayer``: Humming pads N and K itself to these
PAD_N, PAD_K = 256, 128
#: vLLM's default when no tuning entry covers the estimated M (``prepare_humming_moe_kwargs``)
DEFAULT_BLOCK_M = 64
#: Humming's GEMM kernel is the ``humming<...>`` template (``include/humming/kernel/humming.cuh``)
GEMM_KERNEL_PATTERN = r"humming"
SCHEMA = {"gpt_oss": "gpt_oss_mxfp4", "dsv4": "mxfp4"}


def humming_layout_from_logical(logical: LogicalMoE) -> PeerLayout:
    """Logical -> :class:`~.peer_layout.PeerLayout` holding the tensors the checkpoint schemas
    ``gpt_oss_mxfp4`` / ``mxfp4`` declare (``humming/schema/mxfp4.py``: weight uint8 ``[E, N, K/2]``,
    weight_scale uint8 ``[E, N, K/32]``, bias ``[E, N]``): fc1 halves ``[gate ; up]`` (the order
    :func:`~mxfp4lab.backends.marlin.swiglu_packed` reads), biases bf16, H unpadded, I rounded up to 64.
    Exact inverse: :func:`logical_from_humming_layout`."""
    return peer_layout_from_logical(logical, GATE_UP_HALVES)


def logical_from_humming_layout(layout: PeerLayout, intermediate_size: int) -> dict:
    """Inverse of :func:`humming_layout_from_logical` (tests): dict of LogicalMoE fields."""
    return logical_from_peer_layout(layout, GATE_UP_HALVES, intermediate_size)


def schema_tensors(layout: PeerLayout) -> dict:
    """``{"w13": (tensors, shape_n, shape_k), "w2": ...}`` with the schema's tensor names."""
    out = {}
    for sub, g, n, k in (("w13", layout.fc1, 2 * layout.intermediate_size, layout.hidden_size),
                         ("w2", layout.fc2, layout.hidden_size, layout.intermediate_size)):
        t = {"weight": g.weight, "weight_scale": g.scale}
        if g.bias is not None:
            t["bias"] = g.bias
        out[sub] = (t, n, k)
    return out


def check_schema(layout: PeerLayout, schema: str, dtype=torch.bfloat16) -> dict:
    """Each sublayer's tensors against Humming's checkpoint schema declaration (``validate_tensors``:
    names, shapes, dtypes). -> ``{sub: (schema object, tensors, shape_n, shape_k)}``."""
    from humming.schema import BaseWeightSchema

    out = {}
    for sub, (tensors, n, k) in schema_tensors(layout).items():
        ws = BaseWeightSchema.from_config({"quant_method": schema})
        ws.validate_tensors(tensors, n, k, dtype, num_experts=layout.num_local_experts, has_bias="bias" in tensors)
        out[sub] = (ws, tensors, n, k)
    return out


def convert_to_humming_schema(layout: PeerLayout, schema: str, dtype=torch.bfloat16) -> dict:
    """:func:`check_schema`, then each sublayer through the schema's ``convert_humming`` (vLLM's
    ``_convert_sublayer_to_humming``). -> ``{sub: (HummingWeightSchema, tensors, shape_n, shape_k)}``."""
    out = {}
    for sub, (ws, tensors, n, k) in check_schema(layout, schema, dtype).items():
        stacks = [n // 2] * 2 if sub == "w13" else [n]
        hs, conv = ws.convert_humming(dict(tensors), shape_n_stacks=stacks, shape_k_stacks=[k], param_dtype=dtype,
                                      num_experts=layout.num_local_experts, device=layout.fc1.weight.device)
        out[sub] = (hs, conv, n, k)
    return out


def build_humming_layer(layout: PeerLayout, schema: str, dtype=torch.bfloat16) -> torch.nn.Module:
    """A module holding ``w13_*`` / ``w2_*`` parameters transformed by Humming (GPU), as vLLM's
    ``convert_to_humming_moe_kernel_format`` leaves its ``RoutedExperts`` layer, plus ``locks``."""
    from humming.layer import HummingMethod
    from humming.schema import HummingInputSchema

    layer = torch.nn.Module()
    for sub, (ws, tensors, n, k) in convert_to_humming_schema(layout, schema, dtype).items():
        stacks = [n // 2] * 2 if sub == "w13" else [n]
        ins, _ = HummingInputSchema().convert_humming(tensors, shape_n_stacks=stacks, shape_k_stacks=[k],
                                                      param_dtype=dtype, num_experts=layout.num_local_experts,
                                                      device=layout.fc1.weight.device)
        for name, t in tensors.items():
            setattr(layer, f"{sub}_{name}", torch.nn.Parameter(t, requires_grad=False))
        HummingMethod.prepare_layer_meta(layer=layer, shape_n=n, shape_k=k, weight_schema=ws, input_schema=ins,
                                         num_experts=layout.num_local_experts, pad_n_to_multiple=PAD_N,
                                         pad_k_to_multiple=PAD_K, has_bias="bias" in tensors, torch_dtype=dtype,
                                         sublayer_name=sub)
        HummingMethod.transform_humming_layer(layer, sublayer_name=sub)
    layer.register_buffer("locks", torch.zeros(1024, dtype=torch.int32, device=layout.fc1.weight.device))
    return layer


def block_m_for(tuning: list, valid_shape_m: int) -> int:
    """vLLM's ``prepare_humming_moe_kwargs``: the M block of the tuning entry ``(lo, hi, config)`` with
    ``lo < valid_shape_m <= hi`` (Humming picks its kernel with the same rule), else 64."""
    for lo, hi, cfg in tuning:
        if lo < valid_shape_m <= hi:
            return int(cfg["block_shape"][0])
    return DEFAULT_BLOCK_M


def align_for_humming(topk_ids, num_local: int, expert_offset: int, block_m: int):
    """-> (sorted_ids int32 ``[nb*block_m]``, expert_ids int32 ``[nb]``, num_tokens_padded int32 ``[1]``):
    vLLM's ``moe_align_block_size`` outputs for Humming's indexed GEMM, which runs
    ``ceil(num_tokens_padded / block_m)`` blocks (``include/humming/scheduler.cuh``); the fixed tail of
    unused blocks (expert id = E_local) is never read."""
    from ..kernels.triton_moe import SMALL_ALIGN_MAX_PAIRS, align_pairs, align_pairs_small

    small = topk_ids.is_cuda and topk_ids.numel() <= SMALL_ALIGN_MAX_PAIRS
    a = (align_pairs_small if small else align_pairs)(topk_ids, num_local, expert_offset, block_m)
    used = (a.block_expert < num_local).sum(dtype=torch.int32).reshape(1) * block_m
    return a.sorted_ids.to(torch.int32), a.block_expert.to(torch.int32), used


def combine(down, topk_ids, topk_weights, num_local: int, expert_offset: int, out=None):
    """``sum_k w_k * down[m*k + j]`` in fp32 -> bf16 ``[M, H]``, skipping pairs outside the shard."""
    import triton

    from ..kernels.triton_moe import _combine_kernel

    m, k = topk_ids.shape
    h = down.shape[-1]
    out = torch.empty(m, h, dtype=torch.bfloat16, device=down.device) if out is None else out
    if m:
        bh = min(1024, triton.next_power_of_2(h))
        _combine_kernel[(m, triton.cdiv(h, bh))](
            down, topk_ids.contiguous(), topk_weights.float().contiguous(), down, out, expert_offset, num_local,
            down.stride(0), 0, out.stride(0), H=h, top_k=k, HAS_BIAS=False, BLOCK_H=bh,
            INTERPRET=topk_ids.device.type == "cpu")
    return out


class HummingMoE(MoEBackend):
    """Humming's indexed MXFP4 GEMMs in vLLM's MoE data flow (module docstring)."""

    name = "humming"
    graph_capturable = True  # vLLM captures it; all sizes depend on M, k, E only
    gpu_only = True
    gemm_kernel_pattern = GEMM_KERNEL_PATTERN

    def __init__(self, moe: LogicalMoE, config=None):
        super().__init__(moe, config)
        from .triton_kernels import one_value

        fmt = "gpt_oss" if config is None else config.checkpoint_format
        self.schema = SCHEMA[fmt]
        self.layout = humming_layout_from_logical(moe)
        self.compute_config = json.dumps({"use_batch_invariant": False, "use_f16_accum": False, "gemm_type": "indexed"})
        self._hm, self.layer, self.tuning = self._setup()
        self.tuning_str = {sub: json.dumps(t) for sub, t in self.tuning.items()}
        self.act = {k: one_value(v, k) for k, v in self.swiglu.items()}
        #: checks: fill the intermediate and output buffers with NaN before each call
        self.poison = False

    def _setup(self):
        """-> (``HummingMethod``, the transformed layer, ``{sub: tuning entries}``) (GPU)."""
        from humming.config import GemmType
        from humming.layer import HummingMethod

        layer = build_humming_layer(self.layout, self.schema)
        tuning = {sub: HummingMethod.get_default_tuning_configs(
            layer=layer, use_f16_accum=False, use_batch_invariant=False, gemm_type=GemmType.INDEXED,
            sublayer_name=sub) for sub in ("w13", "w2")}
        return HummingMethod, layer, tuning

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import humming
        except Exception as exc:  # noqa: BLE001
            return False, f"humming is not importable ({type(exc).__name__}: {exc}); pip install humming-kernels==0.1.19"
        if not torch.cuda.is_available():
            return False, f"humming {humming.__version__} needs a CUDA GPU (JIT-compiled kernels)"
        return True, ""

    def valid_shape_m(self, m: int, k: int) -> int:
        """vLLM's ``estimate_local_valid_shape_m``: the pairs this shard expects."""
        return math.ceil(m * k * self.layout.num_local_experts / self.layout.num_experts_total)

    def describe(self, m: int) -> dict:
        import humming

        k = None if self.config is None else self.config.top_k
        d = {"humming": humming.__version__, "schema": self.schema}
        if k is not None:
            v = self.valid_shape_m(m, k)
            d.update(valid_shape_m=v, block_m=block_m_for(self.tuning["w13"], v))
        return d

    def forward(self, x, topk_ids, topk_weights):
        m, k = topk_ids.shape
        lay, dev = self.layout, x.device
        v = self.valid_shape_m(m, k)
        sorted_ids, expert_ids, padded = align_for_humming(topk_ids, lay.num_local_experts, lay.expert_offset,
                                                           block_m_for(self.tuning["w13"], v))
        common = {"sorted_ids": sorted_ids, "expert_ids": expert_ids, "num_tokens_padded": padded,
                  "compute_config": self.compute_config, "valid_shape_m": v}
        new = (lambda *s: torch.full(s, float("nan"), dtype=torch.bfloat16, device=dev)) if self.poison else \
            (lambda *s: torch.empty(s, dtype=torch.bfloat16, device=dev))
        gate_up, down = new(m * k, 2 * lay.intermediate_size), new(m * k, lay.hidden_size)
        self._hm.forward_layer(layer=self.layer, inputs=x.contiguous(), outputs=gate_up, sublayer_name="w13",
                               top_k=k, tuning_config=self.tuning_str["w13"], **common)
        act = swiglu_packed(gate_up, self.act["swiglu_alpha"], self.act["swiglu_beta"],
                            self.act["swiglu_limit"], out=new(m * k, lay.intermediate_size))
        self._hm.forward_layer(layer=self.layer, inputs=act, outputs=down, sublayer_name="w2", top_k=1,
                               tuning_config=self.tuning_str["w2"], **common)
        return combine(down, topk_ids, topk_weights, lay.num_local_experts, lay.expert_offset,
                       out=new(m, lay.hidden_size))
