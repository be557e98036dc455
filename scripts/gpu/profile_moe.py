"""Profile one FlashInfer SM90 MoE call per shape/M with torch.profiler (which kernels, how long);
default tactic vs after FlashInfer's autotuner."""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import os
import torch
from mxfp4lab import flashinfer_build as fb
fb.install(configs=fb.parse_configs(os.environ.get('MXFP4LAB_BUILD_CONFIGS', fb.DEFAULT_CONFIGS)))
from mxfp4lab.backends import get_backend
from mxfp4lab.synthetic import make_inputs, random_layer
from mxfp4lab.models import get_model
from mxfp4lab.prepare import prepare_from_experts

def prof(be, inp, label):
    for _ in range(3): be(*inp)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as p:
        for _ in range(5): be(*inp)
        torch.cuda.synchronize()
    print(f"=== {label}", flush=True)
    print(p.key_averages().table(sort_by="cuda_time_total", row_limit=8, max_name_column_width=110), flush=True)

shape = sys.argv[1] if len(sys.argv) > 1 else "gpt-oss-20b"
cfg = get_model(shape)
prep = prepare_from_experts(random_layer(cfg), config=cfg)
be = get_backend("flashinfer_sm90")(prep, cfg)
for m in (1, 1024):
    inp = make_inputs(cfg, m, 1, "uniform")[0]
    prof(be, inp, f"{shape} M={m} default tactic")
from flashinfer.autotuner import autotune
for m in (1, 1024):
    inp = make_inputs(cfg, m, 1, "uniform")[0]
    with autotune(True):
        be(*inp)
    prof(be, inp, f"{shape} M={m} after autotune")
