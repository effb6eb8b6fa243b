"""Where models come from: the kit's own files and models made elsewhere.

:mod:`export.sources.dispatch` tells a model file's kind by its content (then its suffix) and
hands it to that kind's loader; every loader of an MLP returns the same float description, an
:class:`export.onnx.checkpoint.MLPCheckpoint` with an :class:`~export.sources.dispatch.Origin`.
The loaders: the kit's ``mlp.pt`` (:mod:`export.onnx.checkpoint`), ONNX graphs from any converter
(:mod:`export.sources.onnx_mlp`), torch modules, TorchScript archives and state_dicts
(:mod:`export.sources.torch_mlp`); each turns its structure into the steps of
:mod:`export.sources.steps`, which assembles the MLP. :mod:`export.sources.user_data` reads the
user's calibration and evaluation arrays.
"""
