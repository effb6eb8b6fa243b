"""Pack the firmware's texts (src/texts.def) for the images: src/texts_packed.h.

    python3 tools/pack_texts.py           write src/texts_packed.h
    python3 tools/pack_texts.py --check   exit status 1 if src/texts_packed.h is not what
                                          texts.def gives (a test runs this)

The texts are ASCII; the packing is a byte-pair encoding: up to 157 times, the most frequent
pair of adjacent codes over all texts (the smallest pair on a tie) becomes a new code wherever
it occurs (left to right), as long as that saves bytes (a pair occurs at least three times:
each code costs two bytes of table). The new codes are the bytes no text holds: 0x80 .. 0xFF,
then the control bytes 0x01 .. 0x1F but for a tab and a newline. A pair code c stands for the
two codes of pairs[(c + 0x80) % 256], which may be codes themselves; any other code is itself.
Each text is its codes and a 0 byte, in the order of texts.def (text.c expands them). Standard
library only; the output depends on texts.def alone.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

C_DIR = Path(__file__).resolve().parents[1]
CATALOG = C_DIR / "src" / "texts.def"
PACKED = C_DIR / "src" / "texts_packed.h"
# the codes of the pairs, in the order they are given out
PAIR_CODES = [*range(0x80, 0x100), *(c for c in range(0x01, 0x20) if c not in (0x09, 0x0A))]
MAX_PAIRS = len(PAIR_CODES)

_ENTRY = re.compile(r"MK_TEXT\(\s*(\w+)\s*,((?:\s*\"(?:[^\"\\]|\\.)*\")+)\s*\)")
_LITERAL = re.compile(r"\"((?:[^\"\\]|\\.)*)\"")
_ESCAPES = {"n": "\n", "\\": "\\", '"': '"', "'": "'", "t": "\t"}


def _unescape(body: str) -> str:
    """A C string literal's value (the escapes texts.def may use: \\n \\t \\\\ \\" \\')."""
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\":
            if body[i + 1] not in _ESCAPES:
                raise ValueError(f"texts.def: escape \\{body[i + 1]} is not one of \\n \\t \\\\ "
                                 "\\\" \\'")
            out.append(_ESCAPES[body[i + 1]])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def read_catalog(text: str) -> list[tuple[str, str]]:
    """(id, text) of every MK_TEXT entry, in order (comments are skipped)."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    entries = [(m.group(1), "".join(_unescape(b) for b in _LITERAL.findall(m.group(2))))
               for m in _ENTRY.finditer(text)]
    rest = _ENTRY.sub(" ", text).strip()
    if rest:
        raise ValueError(f"texts.def: not an MK_TEXT(ID, \"text\") entry: {rest[:60]!r}")
    ids = Counter(name for name, _ in entries)
    for name, count in ids.items():
        if count > 1:
            raise ValueError(f"texts.def: {name} is defined {count} times")
    for name, value in entries:
        if not value or any(not 0x20 <= ord(c) < 0x7F and c not in "\n\t" for c in value):
            raise ValueError(f"texts.def: {name} must be non-empty printable ASCII")
    return entries


def is_pair(code: int) -> bool:
    """Whether ``code`` stands for a pair (text.c's test: at least 0x80, or a control byte
    other than a tab or a newline; 0 ends a text)."""
    return code >= 0x80 or (0 < code < 0x20 and code not in (0x09, 0x0A))


def slot(code: int) -> int:
    """Where the pair of ``code`` is in the table of pairs."""
    return (code + 0x80) % 256


def _replace(codes: list[int], pair: tuple[int, int], code: int) -> list[int]:
    out, i = [], 0
    while i < len(codes):
        if i + 1 < len(codes) and (codes[i], codes[i + 1]) == pair:
            out.append(code)
            i += 2
        else:
            out.append(codes[i])
            i += 1
    return out


def pack(texts: list[str]) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """(pairs, the codes of each text): the byte-pair encoding described above."""
    packed = [list(t.encode("ascii")) for t in texts]
    pairs: list[tuple[int, int]] = []
    while len(pairs) < MAX_PAIRS:
        counts: Counter[tuple[int, int]] = Counter()
        for codes in packed:
            counts.update(zip(codes, codes[1:]))
        if not counts:
            break
        best = max(counts.values())
        if best < 3:
            break
        pair = min(p for p, n in counts.items() if n == best)
        code = PAIR_CODES[len(pairs)]
        pairs.append(pair)
        packed = [_replace(codes, pair, code) for codes in packed]
    return pairs, packed


def unpack(pairs: list[tuple[int, int]], codes: list[int]) -> str:
    """The text that ``codes`` stand for."""
    out: list[int] = []

    def expand(code: int) -> None:
        if not is_pair(code):
            out.append(code)
        else:
            first, second = pairs[PAIR_CODES.index(code)]
            expand(first)
            expand(second)

    for code in codes:
        expand(code)
    return bytes(out).decode("ascii")


def _bytes(values: list[int], indent: str) -> list[str]:
    return [indent + ", ".join(f"0x{v:02x}" for v in values[k:k + 12]) + ","
            for k in range(0, len(values), 12)]


def render(entries: list[tuple[str, str]]) -> str:
    """The text of src/texts_packed.h for these catalog entries."""
    texts = [value for _, value in entries]
    pairs, packed = pack(texts)
    for value, codes in zip(texts, packed):
        if unpack(pairs, codes) != value:  # the decoder's definition, checked on every text
            raise AssertionError(f"the packing does not give back {value!r}")
    size = sum(len(c) + 1 for c in packed)
    table = [(0, 0)] * (max(slot(PAIR_CODES[k]) for k in range(len(pairs))) + 1 if pairs else 0)
    for k, pair in enumerate(pairs):
        table[slot(PAIR_CODES[k])] = pair
    lines = [
        "/* Generated by tools/pack_texts.py from texts.def: do not edit. A test checks that",
        " * running it again gives this file. */",
        "#ifndef MK_TEXTS_PACKED_H",
        "#define MK_TEXTS_PACKED_H",
        "",
        "#include <stdint.h>",
        "",
        f"/* {len(texts)} texts, {sum(len(t) + 1 for t in texts)} bytes plain, {size} packed "
        f"and {2 * len(table)} of pairs */",
        f"#define MK_TEXT_LONGEST {max(len(t) for t in texts)}u",
        "",
        "/* a pair code c (0x80 and up, or a control byte but a tab or a newline) stands for the",
        " * two codes mk_text_pairs[(c + 0x80) % 256] (the slots of 0x00, 0x09 and 0x0A unused) */",
        f"static const uint8_t mk_text_pairs[{len(table)}][2] = {{",
    ]
    lines += ["    " + " ".join(f"{{0x{a:02x}, 0x{b:02x}}}," for a, b in table[k:k + 6])
              for k in range(0, len(table), 6)]
    lines += ["};", "", "/* each text's codes and a 0, in the order of texts.def */",
              f"static const uint8_t mk_text_packed[{size}] = {{"]
    for (name, _), codes in zip(entries, packed):
        lines.append(f"    /* {name} */")
        lines += _bytes(codes + [0], "    ")
    lines += ["};", "", "#endif", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true",
                   help="exit status 1 if src/texts_packed.h is out of date")
    args = p.parse_args(argv)
    try:
        wanted = render(read_catalog(CATALOG.read_text()))
    except ValueError as exc:
        print(f"pack_texts: error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if not PACKED.exists() or PACKED.read_text() != wanted:
            print("pack_texts: src/texts_packed.h is not what src/texts.def gives: run "
                  "python3 tools/pack_texts.py", file=sys.stderr)
            return 1
        return 0
    PACKED.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
