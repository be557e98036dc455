"""MoE layer shapes of the models this package studies (GPT-OSS, DeepSeek-V4) and the seed benchmark.

Sources: the published model configurations (Hugging Face ``openai/gpt-oss-20b`` and ``openai/gpt-oss-120b``
``config.json``: hidden and intermediate 2880, 32 / 128 experts, top-4, 24 / 36 layers, ``swiglu_limit`` 7.0;
``deepseek-ai/DeepSeek-V4-Flash``: hidden 4096, ``moe_intermediate_size`` 2048, 256 routed experts + 1
shared, top-6, 43 layers, ``routed_scaling_factor`` 1.5, 3 hash-routed layers, ``swiglu_limit`` 10.0) and the
benchmark shape of SGLang PR #24816. A field no source gives is ``None`` (e.g. ``DSV4_PRO.num_layers``).

One routed expert is a SwiGLU MLP (no bias for DeepSeek-V4, bf16 biases for GPT-OSS)::

    fc1 (gate, up):  w_gate [I, H], w_up [I, H]   (K = H)
    fc2 (down):      w_down [H, I]                (K = I)
    h   = swiglu(x @ w_gate.T (+ b_gate), x @ w_up.T (+ b_up))          [M, I]
    out = h @ w_down.T (+ b_down)                                       [M, H]

The kernel's activation (FlashInfer / TensorRT-LLM convention, ``SwigluBiasAdaptor`` in FlashInfer's
``fused_moe/cutlass_backend/cutlass_fused_moe_kernels.cuh``)::

    gate = min(gate, limit);  up = clamp(up, -limit, limit)      (no clamp when limit is None)
    act  = (up + beta) * gate * sigmoid(alpha * gate)

GPT-OSS: alpha 1.702, beta 1.0, limit 7.0. DeepSeek-V4: alpha 1.0, beta 0.0 (plain SiLU(gate) * up),
limit 10.0.

Routing (``MoEConfig.routing``):

``"softmax_topk"`` (GPT-OSS)
    logits = x @ router_weight.T + router_bias; take the top-k logits; weights = softmax over those
    k logits only.
``"sqrtsoftplus_noaux"`` (DeepSeek-V4)
    scores = sqrt(softplus(logits)); the top-k experts are selected by ``scores + correction_bias``
    (noaux_tc: the bias only moves the selection); weights = the selected *unbiased* scores normalized
    to sum 1, then times ``routed_scaling_factor`` (1.5), applied OUTSIDE the expert kernel. The first
    ``n_hash_layers`` (3) layers are hash-routed (token id -> expert ids) instead.

Weight bytes: MXFP4 is 4 bits per parameter plus one E8M0 byte per 32 parameters = 4.25 bits/param.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------
#: H and I are padded to a multiple of this for the SM90 CUTLASS path (the mixed-input grouped GEMM's
#: K tile: FlashInfer's SM90 W4A16 MoE test pads GPT-OSS's 2880 to 2944).
SM90_PAD_MULTIPLE = 128
#: Elements per E8M0 scale (OCP MX v1.0, Table 1). Kept local to avoid importing torch here.
MX_BLOCK_SIZE = 32
#: Bits of one FP4 E2M1 element.
FP4_BITS = 4
#: Effective bits per parameter, scale included: 4 + 8/32.
MXFP4_BITS_PER_PARAM = FP4_BITS + 8 / MX_BLOCK_SIZE  # 4.25
BF16_BYTES = 2

ROUTING_SOFTMAX_TOPK = "softmax_topk"
ROUTING_SQRTSOFTPLUS_NOAUX = "sqrtsoftplus_noaux"
ROUTINGS = (ROUTING_SOFTMAX_TOPK, ROUTING_SQRTSOFTPLUS_NOAUX)

FORMAT_GPT_OSS = "gpt_oss"
FORMAT_DSV4 = "dsv4"
CHECKPOINT_FORMATS = (FORMAT_GPT_OSS, FORMAT_DSV4)


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class MoEConfig:
    """Shape and numerics of one model's routed-expert MoE layer.

    Attributes:
        name: registry key (``get_model(name)``).
        hidden_size: H, the model dimension (fc1's K, fc2's N).
        intermediate_size: I, one expert's MLP width (fc1 has 2*I output rows, fc2's K).
        num_experts: E, routed experts per layer (shared experts not counted).
        top_k: experts per token.
        swiglu_alpha, swiglu_beta, swiglu_limit: the kernel's activation (module docstring);
            ``swiglu_limit=None`` means no clamp.
        routing: ``"softmax_topk"`` or ``"sqrtsoftplus_noaux"`` (module docstring).
        routed_scaling_factor: multiplies the routing weights outside the kernel (1.0 = none).
        num_layers: MoE layers in the model (``None`` where the facts do not say).
        has_bias: experts carry bf16 biases (GPT-OSS).
        checkpoint_format: ``"gpt_oss"`` or ``"dsv4"`` (see :mod:`mxfp4lab.checkpoints`).
        n_shared_experts: always-on shared experts (not part of the MXFP4 routed kernel).
        n_hash_layers: the first this-many layers route by token-id hash (DeepSeek-V4: 3).
    """

    name: str
    hidden_size: int
    intermediate_size: int
    num_experts: int
    top_k: int
    swiglu_alpha: float
    swiglu_beta: float
    swiglu_limit: float | None
    routing: str
    routed_scaling_factor: float
    num_layers: int | None
    has_bias: bool
    checkpoint_format: str
    n_shared_experts: int = 0
    n_hash_layers: int = 0

    def __post_init__(self) -> None:
        for field in ("hidden_size", "intermediate_size", "num_experts", "top_k"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"MoEConfig {self.name!r}: {field} must be a positive int (got {value!r})")
        for field in ("hidden_size", "intermediate_size"):
            value = getattr(self, field)
            if value % MX_BLOCK_SIZE:
                raise ValueError(
                    f"MoEConfig {self.name!r}: {field} = {value} must be a multiple of {MX_BLOCK_SIZE} "
                    "(one E8M0 scale per 32 elements along K)"
                )
        if self.top_k > self.num_experts:
            raise ValueError(
                f"MoEConfig {self.name!r}: top_k = {self.top_k} exceeds num_experts = {self.num_experts}"
            )
        if self.routing not in ROUTINGS:
            raise ValueError(
                f"MoEConfig {self.name!r}: routing must be one of {ROUTINGS} (got {self.routing!r})"
            )
        if self.checkpoint_format not in CHECKPOINT_FORMATS:
            raise ValueError(
                f"MoEConfig {self.name!r}: checkpoint_format must be one of {CHECKPOINT_FORMATS} "
                f"(got {self.checkpoint_format!r})"
            )
        if self.swiglu_limit is not None and self.swiglu_limit <= 0:
            raise ValueError(f"MoEConfig {self.name!r}: swiglu_limit must be > 0 or None")
        if self.num_layers is not None and self.n_hash_layers > self.num_layers:
            raise ValueError(f"MoEConfig {self.name!r}: n_hash_layers exceeds num_layers")

    # ---------------------------------------------------------------- padded shapes (SM90)
    @property
    def padded_hidden(self) -> int:
        """H rounded up to a multiple of 128 (GPT-OSS 2880 -> 2944)."""
        return round_up(self.hidden_size, SM90_PAD_MULTIPLE)

    @property
    def padded_intermediate(self) -> int:
        """I rounded up to a multiple of 128."""
        return round_up(self.intermediate_size, SM90_PAD_MULTIPLE)

    @property
    def swiglu_kwargs(self) -> dict:
        """``swiglu_alpha / swiglu_beta / swiglu_limit`` as keyword arguments (references, backends)."""
        return dict(swiglu_alpha=self.swiglu_alpha, swiglu_beta=self.swiglu_beta, swiglu_limit=self.swiglu_limit)

    def is_hash_layer(self, layer: int) -> bool:
        """True for the first ``n_hash_layers`` layers (DeepSeek-V4 token-id hash routing)."""
        return layer < self.n_hash_layers

    # ---------------------------------------------------------------- sizes
    def _dims(self, padded: bool) -> tuple:
        if padded:
            return self.padded_hidden, self.padded_intermediate
        return self.hidden_size, self.intermediate_size

    def params_per_expert(self, padded: bool = False) -> int:
        """Weight parameters of one expert: fc1 2*I*H + fc2 H*I = 3*H*I (biases excluded)."""
        h, i = self._dims(padded)
        return 2 * i * h + h * i

    def weight_bytes_per_expert(self, padded: bool = False) -> int:
        """MXFP4 bytes of one expert's weights: 4 bits/param + one scale byte per 32 = 4.25 bits/param.

        Exact (every K is a multiple of 32): packed 3*H*I/2 bytes + scales 3*H*I/32 bytes.
        """
        p = self.params_per_expert(padded)
        return p * FP4_BITS // 8 + p // MX_BLOCK_SIZE

    def bias_bytes_per_expert(self, padded: bool = False) -> int:
        """bf16 bias bytes of one expert (fc1 2*I + fc2 H), 0 without biases."""
        if not self.has_bias:
            return 0
        h, i = self._dims(padded)
        return (2 * i + h) * BF16_BYTES

    def weight_bytes_per_layer(self, padded: bool = False) -> int:
        """MXFP4 weights + biases of all routed experts of one layer."""
        return self.num_experts * (self.weight_bytes_per_expert(padded) + self.bias_bytes_per_expert(padded))

    def expected_active_experts(self, num_tokens: int) -> float:
        """Expected distinct experts hit by ``num_tokens`` tokens under uniform top-k routing:
        E * (1 - (1 - k/E)**M)."""
        if num_tokens <= 0:
            return 0.0
        return self.num_experts * (1.0 - (1.0 - self.top_k / self.num_experts) ** num_tokens)

    def active_weight_bytes(self, num_tokens: int, padded: bool = True) -> float:
        """Expected expert-weight bytes one MoE layer must read for ``num_tokens`` tokens."""
        per_expert = self.weight_bytes_per_expert(padded) + self.bias_bytes_per_expert(padded)
        return self.expected_active_experts(num_tokens) * per_expert

    def flops(self, num_tokens: int, padded: bool = False) -> int:
        """GEMM FLOPs of one layer's routed experts: 2 * M * k * 3 * H * I."""
        return 2 * num_tokens * self.top_k * self.params_per_expert(padded)

    # ---------------------------------------------------------------- test copies
    def scaled(
        self,
        hidden: int | None = None,
        intermediate: int | None = None,
        experts: int | None = None,
        top_k: int | None = None,
        num_layers: int | None = None,
    ) -> MoEConfig:
        """A smaller copy for tests: same numerics/routing/format, other shapes.

        ``top_k`` defaults to ``min(self.top_k, experts)``. The name gets a suffix
        ``"-scaled-h{H}-i{I}-e{E}-k{k}"``, so it is never confused with the real model.
        """
        h = self.hidden_size if hidden is None else hidden
        i = self.intermediate_size if intermediate is None else intermediate
        e = self.num_experts if experts is None else experts
        k = min(self.top_k, e) if top_k is None else top_k
        return dataclasses.replace(
            self,
            name=f"{self.name}-scaled-h{h}-i{i}-e{e}-k{k}",
            hidden_size=h,
            intermediate_size=i,
            num_experts=e,
            top_k=k,
            num_layers=self.num_layers if num_layers is None else num_layers,
        )


# --------------------------------------------------------------------------------------------
# Instances (sources in the module docstring)
# --------------------------------------------------------------------------------------------
GPT_OSS_20B = MoEConfig(
    name="gpt-oss-20b",
    hidden_size=2880,
    intermediate_size=2880,
    num_experts=32,
    top_k=4,
    swiglu_alpha=1.702,
    swiglu_beta=1.0,
    swiglu_limit=7.0,
    routing=ROUTING_SOFTMAX_TOPK,
    routed_scaling_factor=1.0,
    num_layers=24,
    has_bias=True,
    checkpoint_format=FORMAT_GPT_OSS,
    n_shared_experts=0,
    n_hash_layers=0,
)
GPT_OSS_120B = dataclasses.replace(GPT_OSS_20B, name="gpt-oss-120b", num_experts=128, num_layers=36)

DSV4_FLASH = MoEConfig(
    name="dsv4-flash",
    hidden_size=4096,
    intermediate_size=2048,
    num_experts=256,
    top_k=6,
    swiglu_alpha=1.0,
    swiglu_beta=0.0,
    swiglu_limit=10.0,
    routing=ROUTING_SQRTSOFTPLUS_NOAUX,
    routed_scaling_factor=1.5,
    num_layers=43,
    has_bias=False,
    checkpoint_format=FORMAT_DSV4,
    n_shared_experts=1,
    n_hash_layers=3,
)
#: V4-Pro: hidden 7168, intermediate 3072, 384 experts; its layer count is not used here (None). Routing,
#: SwiGLU, shared expert and hash layers are assumed as Flash.
DSV4_PRO = dataclasses.replace(
    DSV4_FLASH, name="dsv4-pro", hidden_size=7168, intermediate_size=3072, num_experts=384, num_layers=None
)
#: The kernel benchmark shape of the original SGLang change (PR #24816: hidden 4096, inter 2048, 256 experts,
#: top-6), with DeepSeek-V4 SwiGLU and routing. It is a single-layer benchmark: num_layers=1, no hash layer.
SEED_BENCH = dataclasses.replace(DSV4_FLASH, name="seed-bench", num_layers=1, n_hash_layers=0)

MODELS: dict[str, MoEConfig] = {
    m.name: m for m in (GPT_OSS_20B, GPT_OSS_120B, DSV4_FLASH, DSV4_PRO, SEED_BENCH)
}


#: The four shapes of the latency study: the benchmark's and the notebook's default.
STUDY_SHAPES = ("gpt-oss-20b", "gpt-oss-120b", "dsv4-flash", "seed-bench")


def get_model(name: str | MoEConfig) -> MoEConfig:
    """The registered :class:`MoEConfig` called ``name`` (e.g. ``"gpt-oss-120b"``); a :class:`MoEConfig`
    is returned as is (so callers take either).

    Raises:
        KeyError: unknown name; the message lists the valid names.
    """
    if isinstance(name, MoEConfig):
        return name
    try:
        return MODELS[name]
    except KeyError:
        valid = ", ".join(sorted(MODELS))
        raise KeyError(f"unknown model {name!r}; valid names: {valid}") from None


__all__ = [
    "DSV4_FLASH",
    "DSV4_PRO",
    "FORMAT_DSV4",
    "FORMAT_GPT_OSS",
    "GPT_OSS_20B",
    "GPT_OSS_120B",
    "MODELS",
    "MXFP4_BITS_PER_PARAM",
    "ROUTING_SOFTMAX_TOPK",
    "ROUTING_SQRTSOFTPLUS_NOAUX",
    "SEED_BENCH",
    "SM90_PAD_MULTIPLE",
    "MoEConfig",
    "get_model",
    "round_up",
]
