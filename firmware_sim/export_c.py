"""``mark1 export c``: a weight package as C source, with the firmware's engine, for a user's own
firmware (no serial protocol, no flash store: the model is compiled in, as TFLite Micro and
emlearn users do it).

The folder written::

    model.h, model.c   the package as a const byte array (4-byte aligned, read in place), its
                       sizes and class names; mark1_model_init / _run / _class
    mark1/             the engine and the loader of the C firmware (firmware_sim/c/src), as is
    main.c             an example: int8 inputs on standard input, one line per inference
    Makefile           builds the example with the host's C compiler
    README.md          how to use it on a board

The engine is the firmware's own code, so the outputs are the golden reference's bits (tested
with the host compiler in tests/test_export_c.py). Registered under ``mark1 export`` by
``export/onnx/cli.py``; registering imports argparse only.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from export.contract.package import Package

ENGINE_SOURCES = (
    "config.h", "crc32.c", "crc32.h", "dsp.h", "engine.c", "engine.h", "engine_dsp.c",
    "engine_portable.c", "engine_step.c", "frame.c", "frame.h", "package.c", "package.h",
    "requantize.c", "requantize.h", "sha256.c", "sha256.h", "text.c", "text.h", "texts.def",
    "texts_packed.h",
)
"""The files of firmware_sim/c/src a model needs: the engine, the package loader and what they
use (the loader checks the package once at start-up, CRC-32 and SHA-256 included)."""

EXPORT_C_EPILOG = """\
MODEL is a weight package (.m1w) from `mark1 quantize` (an MLP, a model made elsewhere, a Mark I
machine). OUT is a new folder: model.h and model.c (the package as a const array and three
functions), mark1/ (the C firmware's engine and loader, C99, no malloc, no floating point),
main.c (an example reading int8 inputs on standard input), a Makefile and a README.

On a Cortex-M4, M7 or M33 the engine takes its DSP path (SMLAD) by itself; elsewhere the
portable one. The outputs are the golden reference's bits (docs/INT8.md).

exit status: 0 written; 2 bad input (missing or invalid package, OUT not empty).
"""


def _c_string(text: str) -> str:
    """A C string literal of ``text`` (UTF-8, escaped byte by byte where needed)."""
    out = []
    for b in text.encode("utf-8"):
        c = chr(b)
        out.append(f"\\{b:03o}" if b < 0x20 or b >= 0x7F or c in '"\\?' else c)
    return '"' + "".join(out) + '"'


def _byte_rows(data: bytes, per_row: int = 16) -> str:
    return "\n".join("        " + ", ".join(f"0x{b:02x}" for b in data[i:i + per_row]) + ","
                     for i in range(0, len(data), per_row))


def model_sources(data: bytes, pkg: Package) -> dict[str, str]:
    """model.h and model.c for a package (its bytes ``data`` and its decoded ``pkg``)."""
    sizes = "-".join(str(n) for n in [pkg.n_inputs] + [lay.n_out for lay in pkg.layers])
    header = f"""/* The model {pkg.model_id.hex()[:16]} ({pkg.source}, {sizes}, {pkg.rounding}
 * rounding), written by `mark1 export c`. Its package (docs/PACKAGE.md) is compiled in:
 * mark1_model_init checks it once (as a device checks a pushed package), then mark1_model_run
 * infers with the engine in mark1/ (static buffers only). */
#ifndef MARK1_MODEL_H
#define MARK1_MODEL_H

#include <stdint.h>

/* int8 inputs, row-major shape {tuple(pkg.input_shape)} */
#define MARK1_MODEL_INPUTS {pkg.n_inputs}u
#define MARK1_MODEL_OUTPUTS {pkg.n_outputs}u
#define MARK1_MODEL_CLASSES {len(pkg.classes)}u
#define MARK1_MODEL_ARENA_BYTES {pkg.ram_bytes}u  /* the activation arena (static RAM) */
#define MARK1_MODEL_PACKAGE_BYTES {len(data)}u    /* the package (flash) */
/* An input x (real) is given as x_q = clamp(round(x / SCALE) + ZERO_POINT, -128, 127). */
#define MARK1_MODEL_INPUT_SCALE {float(pkg.input_scale)!r}
#define MARK1_MODEL_INPUT_ZERO_POINT ({int(pkg.input_zero_point)})
/* An output y_q stands for OUTPUT_SCALE * (y_q - OUTPUT_ZERO_POINT). */
#define MARK1_MODEL_OUTPUT_SCALE {float(pkg.output_scale)!r}
#define MARK1_MODEL_OUTPUT_ZERO_POINT ({int(pkg.output_zero_point)})

extern const char *const mark1_model_class_names[MARK1_MODEL_CLASSES];

/* Check the compiled-in package: 0, or -1 if it is damaged (the reason in `why`, may be 0). */
int mark1_model_init(char *why, uint32_t why_bytes);

/* One inference on MARK1_MODEL_INPUTS int8 values (read in place): the MARK1_MODEL_OUTPUTS
 * int8 outputs, valid until the next call. Call mark1_model_init first. */
const int8_t *mark1_model_run(const int8_t *x);

/* The class of outputs y (argmax, or the Mark I's codebook): an index of
 * mark1_model_class_names. */
uint32_t mark1_model_class(const int8_t *y);

#endif
"""
    names = ",\n".join(f"    {_c_string(name)}" for name in pkg.classes)
    source = f"""/* The model's package and the three functions of model.h (`mark1 export c`). */
#include "model.h"

#include "engine.h"

static const union {{
    uint32_t align; /* the engine reads the package in place, 4-byte aligned */
    uint8_t bytes[MARK1_MODEL_PACKAGE_BYTES];
}} package = {{
    .bytes = {{
{_byte_rows(data)}
    }},
}};

static union {{
    uint32_t align;
    int8_t bytes[MARK1_MODEL_ARENA_BYTES];
}} arena;

static mk_model model;

const char *const mark1_model_class_names[MARK1_MODEL_CLASSES] = {{
{names}
}};

int mark1_model_init(char *why, uint32_t why_bytes)
{{
    char none[1];
    mk_text t;
    mk_text_init(&t, why ? why : none, why ? why_bytes : sizeof none);
    if (mk_package_load(&model, package.bytes, MARK1_MODEL_PACKAGE_BYTES, &t, 0, 0) != 0) {{
        return -1;
    }}
    return model.ram_bytes <= sizeof arena.bytes ? 0 : -1;
}}

const int8_t *mark1_model_run(const int8_t *x)
{{
    return mk_engine_run(&model, x, arena.bytes, MK_ENGINE_PATH);
}}

uint32_t mark1_model_class(const int8_t *y)
{{
    return mk_decide(&model, y);
}}
"""
    return {"model.h": header, "model.c": source}


MAIN_C = """/* An example of the exported model: int8 inputs on standard input
 * (MARK1_MODEL_INPUTS bytes each, as many as given), one line each on standard output: the
 * class index, its name and the int8 outputs. On a board, call the same three functions on
 * your sensor's data. */
#include <stdio.h>

#include "model.h"

int main(void)
{
    static int8_t x[MARK1_MODEL_INPUTS];
    char why[160];
    if (mark1_model_init(why, sizeof why) != 0) {
        fprintf(stderr, "the model does not load: %s\\n", why);
        return 1;
    }
    while (fread(x, 1, sizeof x, stdin) == sizeof x) {
        const int8_t *y = mark1_model_run(x);
        uint32_t k = mark1_model_class(y), o;
        printf("%lu %s", (unsigned long)k, mark1_model_class_names[k]);
        for (o = 0; o < MARK1_MODEL_OUTPUTS; o++) {
            printf(" %d", y[o]);
        }
        printf("\\n");
    }
    return 0;
}
"""

MAKEFILE = """# The example on this computer: make && ./model_demo < inputs.bin
CC     ?= cc
CFLAGS ?= -std=c99 -O2 -Wall -Wextra -Werror
SRC    := main.c model.c $(wildcard mark1/*.c)

model_demo: $(SRC) model.h $(wildcard mark1/*.h)
\t$(CC) $(CFLAGS) -Imark1 -I. $(SRC) -o $@

clean:
\trm -f model_demo
.PHONY: clean
"""


def readme(pkg: Package, data: bytes) -> str:
    sizes = "-".join(str(n) for n in [pkg.n_inputs] + [lay.n_out for lay in pkg.layers])
    return f"""# A mark1-kit model in C

The weight package {pkg.model_id.hex()[:16]} ({pkg.source}, {sizes}, {pkg.rounding}
rounding) as C source, with the engine of the mark1-kit firmware. Written by
`mark1 export c`; the outputs are the golden reference's bits (`export/contract/golden.py`).

| file | what |
|---|---|
| `model.h`, `model.c` | the package as a `const` array ({len(data):,} bytes of flash), \
sizes, class names, `mark1_model_init` / `_run` / `_class` |
| `mark1/` | the engine and the package loader (C99, no `malloc`, no floating point) |
| `main.c`, `Makefile` | an example for this computer: `make && ./model_demo < inputs.bin` |

## In your firmware

1. Add `model.c` and `mark1/*.c` to the build, `-Imark1` to the include path (C99;
   `-ffunction-sections -Wl,--gc-sections` drops what the model does not use).
2. At start-up: `mark1_model_init(why, sizeof why)` checks the package (CRC-32, SHA-256 and every
   check of docs/PACKAGE.md) and returns 0.
3. Per inference: quantize the input, `x_q = clamp(round(x / MARK1_MODEL_INPUT_SCALE) +
   MARK1_MODEL_INPUT_ZERO_POINT, -128, 127)`, then `y = mark1_model_run(x_q)` and
   `mark1_model_class(y)` (an index of `mark1_model_class_names`).

RAM: {pkg.ram_bytes:,} bytes of activation arena (`MARK1_MODEL_ARENA_BYTES`, static) and the
loaded model's table (a few hundred bytes). On a core with the DSP extension (Cortex-M4, M7,
M33: `__ARM_FEATURE_DSP`) the dense layers run SMLAD code (about 1.7 instructions per
multiply-accumulate on a Cortex-M4); elsewhere a portable C99 path (about 4 on a Cortex-M3).
Define `MK_ENGINE_ONE_PATH=1` to link only the path the core runs. Right shifts of negative
numbers: `mark1/config.h` refuses to compile where they are not arithmetic.

To update the model without rebuilding, use the firmware instead (`mark1 push` over a serial
port; firmware_sim/c/README.md in mark1-kit).
"""


def c_files(data: bytes, pkg: Package) -> dict[str, str]:
    """The text files of an ``export c`` folder for package bytes ``data`` (decoded: ``pkg``),
    by name; the engine's sources go beside them into ``mark1/`` (:data:`ENGINE_SOURCES`)."""
    files = model_sources(data, pkg)
    files["main.c"], files["Makefile"], files["README.md"] = MAIN_C, MAKEFILE, readme(pkg, data)
    return files


def folder_names(files: dict[str, str]) -> list[str]:
    """Every file an ``export c`` folder holds, for the text ``files`` of :func:`c_files`."""
    return sorted(files) + [f"mark1/{name}" for name in ENGINE_SOURCES]


def write_c_files(files: dict[str, str], folder: Path) -> None:
    """Write the text ``files`` and the engine's sources into the existing ``folder``."""
    import shutil

    from firmware_sim.firmware import C_DIR

    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "mark1").mkdir()
    for name in ENGINE_SOURCES:
        shutil.copyfile(C_DIR / "src" / name, folder / "mark1" / name)


def _check_new_folder(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"--out {str(target)!r} exists and is not an empty folder; give a new "
                         "folder")


def export_c(data: bytes, out: str) -> list[str]:
    """Write the folder ``out`` (new, or empty) for package bytes ``data``: the files written.

    Raises ``ValueError`` (one line) for an invalid package or a folder that is not empty; the
    folder is written beside and renamed into place, so a failure leaves nothing behind."""
    import os
    import shutil
    import tempfile

    from export.contract.package import decode_package

    target = Path(out)
    _check_new_folder(target)
    pkg = decode_package(data)
    files = c_files(data, pkg)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write_c_files(files, work)
        os.chmod(work, 0o755)
        if target.exists():
            target.rmdir()  # empty, checked above
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return folder_names(files)


def _export_c(args: argparse.Namespace) -> int:
    from export.contract.package import read_package
    from mark1.io import OutputPlan

    plan = OutputPlan()  # the model and the folder checked before anything is written
    path = plan.read("MODEL", args.model, what="model file")
    data, pkg = read_package(path)
    files = c_files(data, pkg)
    plan.write_folder("--out", args.out, folder_names(files))
    with plan:
        _check_new_folder(Path(args.out))  # after the plan's own checks of the place
        write_c_files(files, plan.staged(args.out))
    written = folder_names(files)
    sizes = "-".join(str(n) for n in [pkg.n_inputs] + [lay.n_out for lay in pkg.layers])
    print(f"export c: {path} ({pkg.source}, {sizes}) -> {args.out}/ ({len(written)} files: "
          f"model.h, model.c, main.c, Makefile, README.md, mark1/)")
    print(f"  package {len(data):,} bytes of flash, arena {pkg.ram_bytes:,} bytes of RAM; "
          f"try: make -C {args.out} && {args.out}/model_demo < inputs.bin")
    return 0


def register_format(formats: argparse._SubParsersAction) -> None:
    """Add ``export c`` to the formats of ``mark1 export``."""
    c = formats.add_parser(
        "c",
        help="a weight package as C source with the firmware's engine",
        description="Write a weight package (.m1w) as C source (a const array and three "
        "functions) with the C firmware's int8 engine, for your own firmware.",
        epilog=EXPORT_C_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("model", metavar="MODEL", help="weight package (.m1w)")
    c.add_argument("--out", required=True, help="folder to write (new or empty)")
    c.set_defaults(handler=_export_c)
