"""mxfp4lab: MXFP4 Mixture-of-Experts on Hopper (SM90).

Data flows one way: checkpoint -> logical MoE tensors -> backend layout -> study -> figure. Each layer
imports only the layers below it (``tests/test_import_graph.py`` checks it):

* :mod:`mxfp4lab.formats`, :mod:`mxfp4lab.models`  E2M1/E8M0 numerics; model configurations
* :mod:`mxfp4lab.moe_tensors`   the data model: ``ShardSpec``, ``LogicalMoE``, gate/up helpers, tensor check
* :mod:`mxfp4lab.layout`        physical layouts, each with its exact inverse (SM90 CUTLASS, Triton)
* :mod:`mxfp4lab.reference`     routing, clamped SwiGLU, fp32 and kernel-faithful MoE references
* :mod:`mxfp4lab.checkpoints`   GPT-OSS / DeepSeek-V4 safetensors layouts (lazy, validated reads; writer)
* :mod:`mxfp4lab.synthetic`     every generator: origin weights, random layers, inputs, synthetic checkpoints
* :mod:`mxfp4lab.prepare`       checkpoint experts -> ``LogicalMoE``
* :mod:`mxfp4lab.kernels`, :mod:`mxfp4lab.flashinfer_build`  mxfp4lab's Triton kernels; FlashInfer's W4A16 build
* :mod:`mxfp4lab.backends`      one interface, one table: emulated, naive torch, FlashInfer SM90, Triton, Marlin
* :mod:`mxfp4lab.bench`, :mod:`mxfp4lab.roofline`  timing harness and sweeps; roofline floors
* :mod:`mxfp4lab.results`, :mod:`mxfp4lab.provenance`  the one loader/writer of ``data/results``
* :mod:`mxfp4lab.dispatch`, :mod:`mxfp4lab.distributed`  fastest backend per (shape, M); TP/EP across processes
* :mod:`mxfp4lab.studies`       layout / accuracy / latency DataFrames, each with its figures
* :mod:`mxfp4lab.widgets`, :mod:`mxfp4lab.report`, :mod:`mxfp4lab.cli`  explorers, papermill reports, the command
"""

__version__ = "0.1.0"
