"""MLPs trained on the retina tasks, and ONNX for a target device (a Jetson TX2, a desktop).

* :mod:`export.onnx.mlp` -- the torch MLP and its training; :mod:`export.onnx.checkpoint` -- its
  file (``mlp.pt``);
* :mod:`export.onnx.onnx_export` -- an MLP to ONNX, checked against a target profile
  (:mod:`export.onnx.profiles`); :mod:`export.onnx.markI_onnx` -- the Mark I machine as an ONNX
  graph;
* :mod:`export.onnx.parity` -- onnxruntime against the source; :mod:`export.onnx.bundle` -- the
  bundle for the target (model, metadata, runner, ``templates/``); :mod:`export.onnx.figures`;
* :mod:`export.onnx.cli` -- ``mark1 train-mlp`` and ``mark1 export onnx``.

Importing this package is light; torch, onnx and onnxruntime are imported by the modules that use
them.
"""
