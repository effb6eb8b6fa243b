"""TensorFlow Lite: int8 ``.tflite`` MLPs read as weight packages (:mod:`export.tflite.read`),
weight packages written as ``.tflite`` (:mod:`export.tflite.write`).

The flatbuffer is read and written with the ``flatbuffers`` package and the ``tflite`` package's
code generated from TensorFlow Lite's schema; TensorFlow is not needed. ``docs/TFLITE.md`` says
what is read, what is written and how both agree with TFLite Micro and LiteRT.
"""
