"""Pack the firmware's texts (src/texts.def) for the images: src/texts_packed.h.

    python3 tools/pack_texts.py           write src/texts_packed.h
    python3 tools/pack_texts.py --check   exit status 1 if src/texts_packed.h is not what
                                          texts.def gives (a test runs this)

The texts are ASCII. Each text is a row of codes and a 0 byte, in the order of texts.def, all
in one array (text.c expands them). A code is a character, or, if it is a byte no text holds
(0x80 .. 0xFF, then the control bytes 0x01 .. 0x1F but a tab and a newline: 157 codes), it
stands for codes of its entry in a table of two bytes a code, at (code + 0x80) % 256:

- a pair (the first 112 codes): a byte-pair encoding; the most frequent pair of adjacent codes
  over all texts (the smallest on a tie) becomes a code wherever it occurs (left to right),
  as long as it occurs at least three times (each code costs two bytes of table);
- a phrase (the others): 3 to 16 codes that the packed texts themselves hold, by their offset
  in the array (12 bits) and their length less one (4 bits). The row of codes that saves the
  most, (occurrences - 1) * (length - 1) - 2 bytes, becomes a code wherever it occurs but its
  first occurrence, which stays as it is, and which later phrases neither enter nor cross.

Standard library only; the output depends on texts.def alone.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple

C_DIR = Path(__file__).resolve().parents[1]
CATALOG = C_DIR / "src" / "texts.def"
PACKED = C_DIR / "src" / "texts_packed.h"
# the codes that stand for others, in the order they are given out
CODES = [*range(0x80, 0x100), *(c for c in range(0x01, 0x20) if c not in (0x09, 0x0A))]
MAX_PAIRS = 112
PHRASE_MIN, PHRASE_MAX = 3, 16
OFFSET_LIMIT = 1 << 12

_ENTRY = re.compile(r"MK_(TEST_)?TEXT\(\s*(\w+)\s*,((?:\s*\"(?:[^\"\\]|\\.)*\")+)\s*\)")
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
    """(id, text) of every MK_TEXT and MK_TEST_TEXT entry, in order (comments are skipped)."""
    return [(name, value) for name, value, _ in _read_entries(text)]


def test_only(text: str) -> int:
    """How many texts at the end of the catalog are MK_TEST_TEXT (builds with MK_TEST_HOOKS
    only); one earlier is an error."""
    kinds = [test for _, _, test in _read_entries(text)]
    count = len(kinds) - kinds.index(True) if True in kinds else 0
    if not all(kinds[len(kinds) - count:]):
        raise ValueError("texts.def: an MK_TEXT entry after an MK_TEST_TEXT one (those go last)")
    return count


def _read_entries(text: str) -> list[tuple[str, str, bool]]:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    entries = [(m.group(2), "".join(_unescape(b) for b in _LITERAL.findall(m.group(3))),
                bool(m.group(1))) for m in _ENTRY.finditer(text)]
    rest = _ENTRY.sub(" ", text).strip()
    if rest:
        raise ValueError(f"texts.def: not an MK_TEXT(ID, \"text\") entry: {rest[:60]!r}")
    ids = Counter(name for name, _, _ in entries)
    for name, count in ids.items():
        if count > 1:
            raise ValueError(f"texts.def: {name} is defined {count} times")
    for name, value, _ in entries:
        if not value or any(not 0x20 <= ord(c) < 0x7F and c not in "\n\t" for c in value):
            raise ValueError(f"texts.def: {name} must be non-empty printable ASCII")
    return entries


def is_code(code: int) -> bool:
    """Whether ``code`` stands for others (text.c's test: at least 0x80, or a control byte
    other than a tab or a newline; 0 ends a text)."""
    return code >= 0x80 or (0 < code < 0x20 and code not in (0x09, 0x0A))


def slot(code: int) -> int:
    """Where the entry of ``code`` is in the table of codes."""
    return (code + 0x80) % 256


class Packing(NamedTuple):
    """The packed texts: the codes of each text, the array of all of them (each text's codes
    and a 0), and what each code given out stands for: ``pairs[k]`` for ``CODES[k]``,
    ``phrases[k]`` (offset in the array, length) for ``CODES[len(pairs) + k]``."""

    texts: list[list[int]]
    pairs: list[tuple[int, int]]
    phrases: list[tuple[int, int]]

    @property
    def array(self) -> list[int]:
        return [c for codes in self.texts for c in [*codes, 0]]

    @property
    def size(self) -> int:
        """Bytes in the image: the array and two bytes a code given out."""
        return len(self.array) + 2 * (len(self.pairs) + len(self.phrases))


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


def _pairs(texts: list[list[int]]) -> tuple[list[tuple[int, int]], list[list[int]]]:
    pairs: list[tuple[int, int]] = []
    while len(pairs) < MAX_PAIRS:
        counts: Counter[tuple[int, int]] = Counter()
        for codes in texts:
            counts.update(zip(codes, codes[1:]))
        best = max(counts.values(), default=0)
        if best < 3:
            break
        pair = min(p for p, n in counts.items() if n == best)
        code = CODES[len(pairs)]
        pairs.append(pair)
        texts = [_replace(codes, pair, code) for codes in texts]
    return pairs, texts


# While phrases are chosen, a text is a list of items: a code, or a phrase's first occurrence
# (a list of codes, left as it is).
_Item = int | list


def _best_phrase(texts: list[list[_Item]]) -> tuple[int, ...] | None:
    """The row of codes whose phrase saves the most (longest, then smallest on a tie), counted
    as the replacement finds it: left to right, not overlapping, not across a first occurrence."""
    found: dict[tuple[int, ...], list[int]] = {}  # row: [occurrences, text, end of the last]
    for t, items in enumerate(texts):
        for i in range(len(items)):
            row: tuple[int, ...] = ()
            for item in items[i:i + PHRASE_MAX]:
                if not isinstance(item, int):
                    break
                row += (item,)
                if len(row) < PHRASE_MIN:
                    continue
                end = i + len(row)
                seen = found.setdefault(row, [0, -1, 0])
                if seen[1] != t or i >= seen[2]:
                    seen[0] += 1
                    seen[1], seen[2] = t, end
    best = min(found.items(), default=None,
               key=lambda kv: (-((kv[1][0] - 1) * (len(kv[0]) - 1) - 2), -len(kv[0]), kv[0]))
    if best is None or (best[1][0] - 1) * (len(best[0]) - 1) - 2 <= 0:
        return None
    return best[0]


def pack(texts: list[str]) -> Packing:
    """The encoding described above."""
    pairs, coded = _pairs([list(t.encode("ascii")) for t in texts])
    items: list[list[_Item]] = [list(codes) for codes in coded]
    rows: list[tuple[int, ...]] = []
    firsts: list[list] = []  # each phrase's first occurrence (the list object in its text)
    while len(pairs) + len(rows) < len(CODES):
        row = _best_phrase(items)
        if row is None:
            break
        code = CODES[len(pairs) + len(rows)]
        first: list | None = None
        for t, text in enumerate(items):
            out: list[_Item] = []
            i = 0
            while i < len(text):
                if all(isinstance(x, int) for x in text[i:i + len(row)]) and \
                        tuple(text[i:i + len(row)]) == row:
                    if first is None:
                        first = list(row)
                        out.append(first)
                    else:
                        out.append(code)
                    i += len(row)
                else:
                    out.append(text[i])
                    i += 1
            items[t] = out
        assert first is not None  # the row occurs (twice at least)
        rows.append(row)
        firsts.append(first)
    # the array: first occurrences laid out in place, their offsets noted
    offsets: dict[int, int] = {}
    packed: list[list[int]] = []
    at = 0

    def lay(item: _Item, codes: list[int]) -> None:
        if isinstance(item, int):
            codes.append(item)
            return
        offsets[id(item)] = at + len(codes)
        for inner in item:
            lay(inner, codes)

    for text in items:
        codes: list[int] = []
        for item in text:
            lay(item, codes)
        packed.append(codes)
        at += len(codes) + 1
    phrases = [(offsets[id(first)], len(row)) for first, row in zip(firsts, rows)]
    if any(offset + length > OFFSET_LIMIT for offset, length in phrases):
        raise ValueError("texts.def: a phrase lies past the 4 KB a table entry reaches")
    return Packing(packed, pairs, phrases)


def unpack(packing: Packing, codes: list[int]) -> str:
    """The text that ``codes`` stand for."""
    array = packing.array
    out: list[int] = []

    def expand(code: int) -> None:
        if not is_code(code):
            out.append(code)
            return
        k = CODES.index(code)
        if k < len(packing.pairs):
            for inner in packing.pairs[k]:
                expand(inner)
        else:
            offset, length = packing.phrases[k - len(packing.pairs)]
            for inner in array[offset:offset + length]:
                expand(inner)

    for code in codes:
        expand(code)
    return bytes(out).decode("ascii")


def table(packing: Packing) -> list[tuple[int, int]]:
    """The two bytes of each code's entry, by slot (unused slots 0): a pair's two codes; a
    phrase's offset (low 8 bits, then 4 in the second byte) and length - 1 (high 4 bits)."""
    entries = [*packing.pairs,
               *((offset & 0xFF, offset >> 8 | (length - 1) << 4)
                 for offset, length in packing.phrases)]
    slots = [slot(CODES[k]) for k in range(len(entries))]
    out = [(0, 0)] * (max(slots) + 1 if slots else 0)
    for k, entry in zip(slots, entries):
        out[k] = entry
    return out


def _bytes(values: list[int], indent: str) -> list[str]:
    return [indent + ", ".join(f"0x{v:02x}" for v in values[k:k + 12]) + ","
            for k in range(0, len(values), 12)]


def render(entries: list[tuple[str, str]], tests: int = 0) -> str:
    """The text of src/texts_packed.h for these catalog entries, the last ``tests`` of them for
    the builds with MK_TEST_HOOKS only (they are last in the array, so a phrase whose first
    occurrence is theirs stands in theirs alone)."""
    texts = [value for _, value in entries]
    packing = pack(texts)
    for value, codes in zip(texts, packing.texts):
        if unpack(packing, codes) != value:  # the decoder's definition, checked on every text
            raise AssertionError(f"the packing does not give back {value!r}")
    code_table = table(packing)
    size = len(packing.array)
    lines = [
        "/* Generated by tools/pack_texts.py from texts.def: do not edit. A test checks that",
        " * running it again gives this file. */",
        "#ifndef MK_TEXTS_PACKED_H",
        "#define MK_TEXTS_PACKED_H",
        "",
        "#include <stdint.h>",
        "",
        f"/* {len(texts)} texts, {sum(len(t) + 1 for t in texts)} bytes plain, {size} packed "
        f"and {2 * len(code_table)} of table; without",
        f" * the last {tests}, of the builds with MK_TEST_HOOKS only, "
        f"{size - sum(len(c) + 1 for c in packing.texts[len(texts) - tests:])} packed */",
        f"#define MK_TEXT_LONGEST {max(len(t) for t in texts)}u",
        "",
        "/* a code c at least 0x80, or a control byte but a tab or a newline, stands for others:",
        " * its entry is mk_text_codes[(c + 0x80) % 256] (the slots of 0x00, 0x09, 0x0A unused);",
        " * below slot MK_TEXT_PAIRS, a pair of codes, else a phrase: the codes at offset e[0] |",
        " * (e[1] & 15) << 8 of mk_text_packed, (e[1] >> 4) + 1 of them */",
        f"#define MK_TEXT_PAIRS {len(packing.pairs)}u",
        f"static const uint8_t mk_text_codes[{len(code_table)}][2] = {{",
    ]
    lines += ["    " + " ".join(f"{{0x{a:02x}, 0x{b:02x}}}," for a, b in code_table[k:k + 6])
              for k in range(0, len(code_table), 6)]
    lines += ["};", "", "/* each text's codes and a 0, in the order of texts.def */",
              "static const uint8_t mk_text_packed[] = {"]
    for k, ((name, _), codes) in enumerate(zip(entries, packing.texts)):
        if k == len(entries) - tests:
            lines.append("#if MK_TEST_HOOKS")
        lines.append(f"    /* {name} */")
        lines += _bytes(codes + [0], "    ")
    lines += [*(["#endif"] if tests else []), "};", "", "#endif", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true",
                   help="exit status 1 if src/texts_packed.h is out of date")
    args = p.parse_args(argv)
    try:
        catalog = CATALOG.read_text()
        wanted = render(read_catalog(catalog), test_only(catalog))
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
