"""int8 for a microcontroller: post-training quantization into a weight package.

* :mod:`export.int8.quantize` -- an MLP checkpoint or a Mark I machine into a
  :class:`~export.contract.package.Package`, and the whole ``mark1 quantize`` run;
* :mod:`export.int8.qonnx` -- the same model as QDQ ONNX, and onnxruntime's agreement with the
  golden reference;
* :mod:`export.int8.cli` -- ``mark1 quantize``.
"""
