"""Export: torch MLPs on the retina tasks, ONNX for a Jetson, int8 for a microcontroller.

* :mod:`export.contract` -- what host and device share: the weight package, the wire protocol,
  the golden integer reference (numpy and the standard library only);
* :mod:`export.onnx` -- MLP training and ONNX export for a target device;
* :mod:`export.int8` -- int8 quantization into a weight package;
* :mod:`export.serial` -- the host side of the serial link (``mark1 push``, ``mark1 infer``).

Importing this package is light; torch and onnxruntime are imported by the modules that use them.
"""
