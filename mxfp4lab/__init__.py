"""mxfp4lab: MXFP4 Mixture-of-Experts on Hopper (SM90).

Data flows one way:  checkpoint -> prepare -> backend -> experiment -> plot.

* :mod:`mxfp4lab.formats`      E2M1 / E8M0 numerics, quantize (explicit scale rules), dequantize
* :mod:`mxfp4lab.layout`       SM90 weight interleave and scale fold, their inverses, element tracing
* :mod:`mxfp4lab.models`       model configurations (GPT-OSS 20b/120b, DeepSeek-V4-Flash, ...)
* :mod:`mxfp4lab.checkpoints`  GPT-OSS / DeepSeek-V4 safetensors layouts (lazy read, synthetic write)
* :mod:`mxfp4lab.prepare`      checkpoint tensors -> the tensors FlashInfer's SM90 kernel consumes
* :mod:`mxfp4lab.reference`    routing, clamped SwiGLU, fp32 and kernel-faithful MoE references
* :mod:`mxfp4lab.backends`     one interface: emulated (CPU), flashinfer_sm90, torch_naive, ...
* :mod:`mxfp4lab.bench`        timing harness, roofline, benchmark entry points
* :mod:`mxfp4lab.experiments`  tidy DataFrames for the notebooks;  :mod:`mxfp4lab.plots`, ``widgets``
"""

__version__ = "0.1.0"
