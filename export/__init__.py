"""Export: torch MLPs on the retina tasks, ONNX for a Jetson, int8 for a microcontroller.

Importing this package is light; torch and onnxruntime are imported by the modules that use them.
"""
