"""Bad inputs of a backend (mxfp4lab.backends.base.MoEBackend): ``__init__`` (the layer, its config) and
``__call__`` (x, topk_ids, topk_weights), for every backend that runs on this CPU (the Triton kernel under
Triton's interpreter; the checks run before any kernel).

Silent before: ids >= E or < 0 gave zero rows (CPU) or wrapped modulo 2**32 (Triton), NaN in x or the
weights came out as NaN, a config of another model scaled the output by its routed scaling factor.

On a GPU host the same table runs against the CUDA backends (FlashInfer SM90, Triton, Marlin); without a
GPU (or without the backend's package) those cases skip, saying why."""

import dataclasses

import pytest
import torch
from bad_inputs import Bad, check
from conftest import GPT_OSS_SMALL, tokens

from mxfp4lab.backends import get_backend, make_backend
from mxfp4lab.formats import MXFormatError
from mxfp4lab.models import DSV4_FLASH
from mxfp4lab.moe_tensors import ShardSpec
from mxfp4lab.prepare import prepare_from_experts
from mxfp4lab.synthetic import random_layer
from mxfp4lab.validate import InputError

G = GPT_OSS_SMALL  # E 6, H 224
LAYER = random_layer(G, device="cpu", seed=2)
MOE = prepare_from_experts(LAYER, config=G)
X, IDS, W = tokens(G, m=5)
CPU_BACKENDS = ["emulated_sm90", "emulated_sm90 mode=fp32", "torch_naive", "triton_w4a16"]
GPU_BACKENDS = ["flashinfer_sm90@cuda", "triton_w4a16@cuda", "marlin_mxfp4@cuda"]


class OnDevice:
    """Calls the backend with the CPU tensors of a row moved to ``device`` (other devices, e.g. the "meta"
    of the device-mismatch row, stay where they are)."""

    def __init__(self, be, device):
        self.be, self.device = be, device

    def __getattr__(self, attr):
        return getattr(self.be, attr)

    def __call__(self, *args):
        return self.be(*(a.to(self.device) if isinstance(a, torch.Tensor) and a.is_cpu else a for a in args))


@pytest.fixture(params=CPU_BACKENDS + GPU_BACKENDS)
def backend(request, monkeypatch):
    spec, _, dev = request.param.partition("@")
    name, _, opt = spec.partition(" ")
    if dev and not torch.cuda.is_available():
        pytest.skip(f"{name} on CUDA: no CUDA GPU here")
    if name == "triton_w4a16" and not dev:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    ok, why = get_backend(name).available()
    if not ok:
        pytest.skip(f"{name}: {why}")
    options = dict([opt.split("=")]) if opt else {}
    return OnDevice(make_backend(name, MOE.to(dev or "cpu"), G, **options), dev or "cpu")


def with_value(t, idx, value):
    t = t.clone()
    t[idx] = value
    return t


CALL = [
    # silent before
    Bad("id = E", lambda b: b(X, torch.full_like(IDS, 6), W), InputError, ["topk_ids", "[0, 6)", "got 6", "(0, 0)"]),
    Bad("id = -1", lambda b: b(X, with_value(IDS, (3, 1), -1), W), InputError, ["got -1", "(3, 1)", "1 such"]),
    Bad("int64 id 2**32 + 1 (int32 wrap)", lambda b: b(X, with_value(IDS.long(), (1, 0), 2**32 + 1), W), InputError,
        ["got 4294967297", "(1, 0)"]),
    Bad("NaN in x", lambda b: b(with_value(X, (2, 17), float("nan")), IDS, W), InputError,
        ["x holds NaN or inf", "(2, 17)"]),
    Bad("inf in x", lambda b: b(with_value(X, (0, 0), float("inf")), IDS, W), InputError, ["x holds NaN or inf"]),
    Bad("NaN in topk_weights", lambda b: b(X, IDS, with_value(W, (4, 1), float("nan"))), InputError,
        ["topk_weights holds NaN or inf", "(4, 1)"]),
    Bad("k = 0", lambda b: b(X, IDS[:, :0], W[:, :0]), InputError, ["k >= 1"]),
    # obscure before
    Bad("1-D x", lambda b: b(X[0], IDS, W), InputError, ["x must be [M, 224]", "(224,)"]),
    Bad("3-D x", lambda b: b(X[None], IDS, W), InputError, ["x must be [M, 224]", "(1, 5, 224)"]),
    Bad("LogicalMoE as x", lambda b: b(MOE, IDS, W), TypeError, ["x must be a torch.Tensor", "LogicalMoE"]),
    Bad("list as ids", lambda b: b(X, IDS.tolist(), W), TypeError, ["topk_ids must be a torch.Tensor", "list"]),
    Bad("x wrong H", lambda b: b(X[:, :-1], IDS, W), InputError, ["x must be [M, 224]"]),
    Bad("x fp32", lambda b: b(X.float(), IDS, W), InputError, ["x must be torch.bfloat16"]),
    Bad("ids float", lambda b: b(X, IDS.float(), W), InputError, ["topk_ids must hold integer"]),
    Bad("ids bool", lambda b: b(X, IDS > 0, W), InputError, ["topk_ids must hold integer"]),
    Bad("weights int", lambda b: b(X, IDS, IDS), InputError, ["topk_weights must be floating"]),
    Bad("M mismatch", lambda b: b(X, IDS[:3], W[:3]), InputError, ["must both be [M=5, k]"]),
    Bad("ids 1-D", lambda b: b(X, IDS[:, 0], W), InputError, ["topk_ids must be [M, k] (2-D)"]),
    Bad("devices differ", lambda b: b(X, IDS.to("meta"), W), InputError, ["must be on one device"]),
]


@pytest.mark.parametrize("row", CALL, ids=lambda r: r.id)
def test_bad_call(backend, row):
    check(Bad(row.id, lambda: row.call(backend), row.error, row.words))


def test_handled_inputs(backend):
    """M = 0 is an empty output; an id of another EP rank is valid and adds nothing; int16/int64 ids are
    ids like int32."""
    out = backend(X[:0], IDS[:0], W[:0])  # returns before the forward
    assert out.shape == (0, G.hidden_size) and out.dtype == torch.bfloat16
    if backend.name == "triton_w4a16" and backend.device == "cpu":
        return  # its CPU forward needs the interpreter set before `import triton`: test_triton_interpret.py
    y32 = backend(X, IDS, W)
    assert torch.equal(backend(X, IDS.long(), W), y32) and torch.equal(backend(X, IDS.to(torch.int16), W), y32)


def test_check_values_off_keeps_metadata_checks():
    be = make_backend("emulated_sm90", MOE, G)
    be.check_values = False
    be(X, torch.full_like(IDS, 6), W)  # value rules are off (the caller vouches for them) ...
    with pytest.raises(InputError, match="x must be torch.bfloat16"):
        be(X.float(), IDS, W)  # ... metadata rules are not


def test_ids_of_another_ep_rank_add_nothing():
    half = prepare_from_experts(LAYER, config=G, shard=ShardSpec(ep_size=2, ep_rank=1))  # experts 3..5
    be = make_backend("emulated_sm90", half, G)
    ids = torch.tensor([[0, 1], [2, 0]], dtype=torch.int32)  # all on rank 0
    assert torch.equal(be(X[:2], ids, W[:2]), torch.zeros(2, G.hidden_size, dtype=torch.bfloat16))
    with pytest.raises(InputError, match=r"\[0, 6\)"):
        be(X[:2], ids + 6, W[:2])  # an id of no rank


DSV4_LIKE = dataclasses.replace(DSV4_FLASH, name="dsv4-like", hidden_size=G.hidden_size,
                                intermediate_size=G.intermediate_size, num_experts=G.num_experts, top_k=2)
INIT = [
    Bad("config of another model (x1.5 before)", lambda: make_backend("emulated_sm90", MOE, DSV4_FLASH),
        MXFormatError, ["backend 'emulated_sm90'", "'dsv4-flash' contradicts", "hidden_size"]),
    Bad("config with the layer's shapes, other SwiGLU", lambda: make_backend("torch_naive", MOE, DSV4_LIKE),
        MXFormatError, ["swiglu_alpha", "swiglu_beta", "swiglu_limit"]),
    Bad("checkpoint experts instead of a LogicalMoE", lambda: make_backend("emulated_sm90", LAYER, G), TypeError,
        ["LogicalMoE", "GptOssExperts"]),
    Bad("config a name", lambda: make_backend("emulated_sm90", MOE, "gpt-oss-20b"), TypeError, ["MoEConfig"]),
    Bad("unknown option", lambda: make_backend("emulated_sm90", MOE, G, colour="red"), TypeError, ["colour"]),
    Bad("unknown backend", lambda: make_backend("nope", MOE, G), KeyError, ["unknown backend 'nope'"]),
]


@pytest.mark.parametrize("row", INIT, ids=lambda r: r.id)
def test_bad_init(row):
    check(row)


def test_routed_scaling_applies_only_with_the_layers_own_config():
    be = make_backend("emulated_sm90", MOE, G)
    assert torch.equal(be(X, IDS, W), make_backend("emulated_sm90", MOE, None)(X, IDS, W))  # factor 1.0
