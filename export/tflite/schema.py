"""Names of TensorFlow Lite's schema enums, for reading and for messages.

The ``tflite`` package is ``flatc``'s Python output for TensorFlow Lite's ``schema.fbs``; its
enums are classes of constants. Builtin operator codes past the package's schema (operators
added to TFLite later) are named by number.
"""

from __future__ import annotations

import tflite

TFLITE_IDENTIFIER = b"TFL3"
"""The flatbuffer file identifier of a ``.tflite`` (bytes 4 to 8)."""
SCHEMA_VERSION = 3
"""The ``version`` field TFLite's converter writes and its interpreters expect."""


def _names(enum: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_") and isinstance(v, int)}


OPERATOR_NAMES = _names(tflite.BuiltinOperator)
TENSOR_TYPE_NAMES = _names(tflite.TensorType)
ACTIVATION_NAMES = _names(tflite.ActivationFunctionType)


def operator_code(model: tflite.Model, opcode_index: int) -> int:
    """The builtin code of an operator code entry (schema v3a: the larger of the deprecated
    8-bit field and the 32-bit one)."""
    entry = model.OperatorCodes(opcode_index)
    return max(int(entry.BuiltinCode()), int(entry.DeprecatedBuiltinCode()))


def operator_name(model: tflite.Model, opcode_index: int) -> str:
    """``FULLY_CONNECTED``, ``CONV_2D``, ``CUSTOM (name)``, or ``builtin operator N``."""
    code = operator_code(model, opcode_index)
    if code == tflite.BuiltinOperator.CUSTOM:
        custom = model.OperatorCodes(opcode_index).CustomCode()
        return f"CUSTOM ({custom.decode('utf-8', 'replace') if custom else '?'})"
    return OPERATOR_NAMES.get(code, f"builtin operator {code}")


def tensor_type_name(code: int) -> str:
    return TENSOR_TYPE_NAMES.get(code, f"type {code}")
