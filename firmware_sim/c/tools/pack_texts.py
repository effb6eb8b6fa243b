"""Pack the firmware's texts (src/texts.def) for the images: src/texts_packed.h.

    python3 tools/pack_texts.py           write src/texts_packed.h
    python3 tools/pack_texts.py --check   exit status 1 if src/texts_packed.h is not what
                                          texts.def gives (a test runs this)

The texts are ASCII. Each text is a row of codes that expands to the text and the NUL that ends
it, in the order of texts.def, all in one array (text.c expands them). A code is a character
(the NUL too), or, if it is a byte no text holds (0x80 .. 0xFF, then the control bytes 0x01 ..
0x1E but a newline: 157 codes), it stands for codes of its entry in a table of two bytes a
code, at (code + 0x80) % 256:

- a pair: its two codes;
- a phrase: 3 to 16 codes that the array itself holds, by their offset in it (12 bits) and
  their number less one (4 bits). Its first occurrence stays in place (rows chosen later may
  still become codes inside it), the others become its code.

The byte INLINE (0x1F) and the two bytes after it are a phrase too, its entry in the array
itself: a phrase that occurs once more than its first occurrence (the same bytes, and no code
of the table spent), or one chosen when the table is full.

The rows of codes that become codes are chosen one at a time over all texts (a row holds the
NUL only at its end), their occurrences counted as the replacement finds them: left to right,
not overlapping. The first PAIRS_FIRST are the most frequent pairs (the smallest on a tie), as
long as one occurs three times; then each is the row that saves the most bytes: as a pair (an
occurrence saves a byte, the entry costs two), as a phrase of the table (each occurrence but
the first saves its length less one, the entry costs two) or as INLINE phrases (each
occurrence but the first saves its length less three). An occurrence that holds a phrase's
first occurrence stays as it is, unless it becomes the first occurrence of the new phrase (if
it lays out in at most 16 codes: then every other occurrence saves). The rows are chosen on
the product images' texts; the test images' own texts, last, are packed with the same rows.

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
CODES = [*range(0x80, 0x100), *(c for c in range(0x01, 0x1F) if c != 0x0A)]
INLINE = 0x1F
PAIRS_FIRST = 8  # (measured on this catalog: the smallest; from 4 to 40, within 15 B)
PHRASE_MAX = 16
OFFSET_LIMIT = 1 << 12

# MK_TEXT(ID, "text"), MK_TEST_TEXT(ID, "text"), MK_NAK_TEXT(ID, CODE, "text")
_ENTRY = re.compile(r"MK_(TEST_|NAK_)?TEXT\(\s*(\w+)\s*,(?:\s*\w+\s*,)?"
                    r"((?:\s*\"(?:[^\"\\]|\\.)*\")+)\s*\)")
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
                m.group(1) == "TEST_") for m in _ENTRY.finditer(text)]
    rest = _ENTRY.sub(" ", text).strip()
    if rest:
        raise ValueError(f"texts.def: not an MK_TEXT(ID, \"text\") entry (or MK_TEST_TEXT, "
                         f"MK_NAK_TEXT(ID, CODE, \"text\")): {rest[:60]!r}")
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
    other than a newline and the NUL that ends a text)."""
    return code >= 0x80 or (0 < code < 0x20 and code != 0x0A)


def slot(code: int) -> int:
    """Where the entry of ``code`` is in the table of codes."""
    return (code + 0x80) % 256


class Packing(NamedTuple):
    """The packed texts: the bytes of each text (they expand to the text and its NUL), and
    what each code given out stands for: ``pairs[k]`` for ``CODES[k]``, ``phrases[k]``
    (offset in the array, number of codes) for ``CODES[len(pairs) + k]``."""

    texts: list[list[int]]
    pairs: list[tuple[int, int]]
    phrases: list[tuple[int, int]]

    @property
    def array(self) -> list[int]:
        return [c for codes in self.texts for c in codes]

    @property
    def size(self) -> int:
        """Bytes in the image: the array and two bytes a code given out."""
        return len(self.array) + 2 * (len(self.pairs) + len(self.phrases))


def _entry(offset: int, length: int) -> tuple[int, int]:
    """A phrase's two bytes: its offset (low 8 bits, then 4 in the second byte) and its number
    of codes less one (high 4 bits)."""
    return offset & 0xFF, offset >> 8 | (length - 1) << 4


class _First:
    """A phrase's first occurrence while rows are chosen: the items it holds, left in place in
    the array; it matches a row as its phrase's code."""

    def __init__(self, code: int, items: list) -> None:
        self.code = code
        self.items = items


# While rows are chosen, a text (or a first occurrence) is a list of items: a code, or a
# phrase's first occurrence. A code given out is numbered from CHOSEN while rows are chosen.
_Item = int | _First
CHOSEN = 0x1000


def _value(item: _Item) -> int:
    return item if isinstance(item, int) else item.code


def _laid(item: _Item) -> int:
    """How many codes of the array an item is, laid out."""
    return 1 if isinstance(item, int) else sum(_laid(inner) for inner in item.items)


def _lists(texts: list[list[_Item]]) -> list[list[_Item]]:
    """The texts and every first occurrence's list of items in them, nested ones too."""
    out: list[list[_Item]] = []

    def walk(items: list[_Item]) -> None:
        out.append(items)
        for item in items:
            if isinstance(item, _First):
                walk(item.items)

    for items in texts:
        walk(items)
    return out


class _Row(NamedTuple):
    """A row of codes as the replacement would find it: how many occurrences hold codes only
    (``free``), and whether one holding a first occurrence can be the phrase's first."""

    free: int
    holds_first: bool


def _find(lists: list[list[_Item]], pairs_only: bool) -> dict[tuple[int, ...], _Row]:
    """Every row of 2 to PHRASE_MAX codes (2 only if ``pairs_only``) that occurs twice or more
    (the NUL only at its end), with its occurrences counted left to right, not overlapping."""
    found: dict[tuple[int, ...], _Row] = {}
    level: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    for li, items in enumerate(lists):
        for i in range(len(items) - 1):
            if items[i] != 0:
                level.setdefault((_value(items[i]), _value(items[i + 1])), []).append((li, i))
    length = 2
    while level:
        longer: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        for row, places in level.items():
            if len(places) < 2:
                continue
            free, holds_first, last = 0, False, (-1, 0)
            for li, i in places:  # in order: by list, then position
                if li == last[0] and i < last[1]:
                    continue  # overlaps the occurrence before
                last = (li, i + length)
                segment = lists[li][i:i + length]
                if all(isinstance(item, int) for item in segment):
                    free += 1
                elif sum(_laid(item) for item in segment) <= PHRASE_MAX:
                    holds_first = True
            found[row] = _Row(free, holds_first)
            if pairs_only or length == PHRASE_MAX or row[-1] == 0:
                continue
            for li, i in places:
                if i + length < len(lists[li]):
                    longer.setdefault((*row, _value(lists[li][i + length])), []).append((li, i))
        level, length = longer, length + 1
    return found


def _saves(row: tuple[int, ...], found: _Row, table_full: bool,
           inline: set[int]) -> tuple[int, str]:
    """Bytes a row saves as a code, and as what: a pair (each free occurrence but two for its
    entry), a phrase of the table (its length less one each occurrence but its first, and two
    for its entry) or INLINE phrases (its length less three each occurrence but its first)."""
    if len(row) == 2:
        if table_full or inline.intersection(row):  # (a pair's entry holds one-byte codes)
            return 0, ""
        return found.free - 2, "pair"
    replaced = found.free - (0 if found.holds_first else 1)
    in_table = 0 if table_full else replaced * (len(row) - 1) - 2
    in_array = replaced * (len(row) - 3)
    return (in_table, "phrase") if in_table > in_array else (in_array, "inline")


def _replace(lists: list[list[_Item]], row: tuple[int, ...], code: int, phrase: bool) -> None:
    """``code`` for ``row`` wherever the replacement finds it (left to right, not
    overlapping); a phrase's first occurrence (one that holds a first occurrence if one can)
    is kept as it is, and so is any other occurrence that holds one."""
    n = len(row)
    first: tuple[int, int] | None = None
    if phrase:  # where the first occurrence is: one that holds a first occurrence, else any
        for li, items in enumerate(lists):
            i = 0
            while i + n <= len(items):
                if tuple(_value(item) for item in items[i:i + n]) != row:
                    i += 1
                    continue
                segment = items[i:i + n]
                held = not all(isinstance(item, int) for item in segment)
                if (held and sum(_laid(item) for item in segment) <= PHRASE_MAX) or \
                        (not held and first is None):
                    first = (li, i)
                    if held:
                        break
                i += n
            else:
                continue
            break
    for li, items in enumerate(lists):
        out: list[_Item] = []
        i = 0
        while i < len(items):
            segment = items[i:i + n]
            if len(segment) < n or tuple(_value(item) for item in segment) != row:
                out.append(items[i])
                i += 1
                continue
            if (li, i) == first:
                out.append(_First(code, segment))
            elif all(isinstance(item, int) for item in segment):
                out.append(code)
            else:
                out.extend(segment)
            i += n
        items[:] = out


def pack(texts: list[str], tests: int = 0) -> Packing:
    """The encoding described above; the rows are chosen on all texts but the last ``tests``
    (those of the test images only), which are packed with the same rows after them."""
    product = [[*text.encode("ascii"), 0] for text in texts[:len(texts) - tests]]
    chosen: list[tuple[tuple[int, ...], str]] = []  # each row and what it becomes
    inline: set[int] = set()  # the codes (while rows are chosen) of INLINE phrases
    while True:
        lists = _lists(product)
        table_full = len(chosen) - len(inline) == len(CODES)
        pairs_first = len(chosen) < PAIRS_FIRST and not table_full
        found = _find(lists, pairs_first)
        if pairs_first:  # the most frequent pair (the smallest on a tie), if three times
            best = max(found, default=None, key=lambda r: (found[r].free, [-c for c in r]))
            if best is None or found[best].free < 3:
                break
            kind = "pair"
        else:  # the row that saves the most (the longest, then the smallest, on a tie)
            best = max(found, default=None, key=lambda r: (
                _saves(r, found[r], table_full, inline)[0], len(r), [-c for c in r]))
            if best is None:
                break
            saves, kind = _saves(best, found[best], table_full, inline)
            if saves <= 0:
                break
        code = CHOSEN + len(chosen)
        _replace(lists, best, code, kind != "pair")
        chosen.append((best, kind))
        if kind == "inline":
            inline.add(code)
    rest = [[*text.encode("ascii"), 0] for text in texts[len(texts) - tests:]]
    for k, (row, _) in enumerate(chosen):  # the test texts: every occurrence becomes its code
        _replace(_lists(rest), row, CHOSEN + k, False)
    # the codes of the table: pairs first, then phrases, in the order they were chosen
    order = [k for k, (_, kind) in enumerate(chosen) if kind == "pair"] + \
            [k for k, (_, kind) in enumerate(chosen) if kind == "phrase"]
    final = {CHOSEN + k: CODES[n] for n, k in enumerate(order)}

    # the array: first occurrences laid out in place (where each is, in bytes, and how many
    # codes), an INLINE phrase as its code for now
    where: dict[int, tuple[int, int]] = {}
    laid: list[int] = []

    def lay(item: _Item) -> int:
        if isinstance(item, int):
            laid.append(final.get(item, item))
            laid.extend([0, 0] if item in inline else [])  # its entry, once known
            return 1
        start = len(laid)
        where[item.code] = (start, sum(lay(inner) for inner in item.items))
        return where[item.code][1]

    bounds = [0]
    for items in product + rest:
        for item in items:
            lay(item)
        bounds.append(len(laid))
    k = 0
    while k < len(laid):  # the INLINE phrases' entries
        if laid[k] in inline:
            laid[k:k + 3] = [INLINE, *_entry(*where[laid[k]])]
            k += 2
        k += 1
    phrases = [where[CHOSEN + k] for k in order if chosen[k][1] == "phrase"]
    if any(offset >= OFFSET_LIMIT for offset, _ in where.values()):
        raise ValueError("texts.def: a phrase lies past the 4 KB an entry reaches")
    return Packing([laid[a:b] for a, b in zip(bounds, bounds[1:])],
                   [(final.get(row[0], row[0]), final.get(row[1], row[1]))
                    for row, kind in chosen if kind == "pair"], phrases)


def unpack(packing: Packing, codes: list[int]) -> str:
    """The text that ``codes`` (a text's bytes) stand for (without its NUL)."""
    array = packing.array
    out: list[int] = []

    def expand(data: list[int], at: int) -> int:
        """The code at data[at], expanded; where the next code is."""
        code = data[at]
        if not is_code(code):
            out.append(code)
            return at + 1
        if code == INLINE:
            entry = data[at + 1:at + 3]
            at += 2
        elif CODES.index(code) < len(packing.pairs):
            pair = list(packing.pairs[CODES.index(code)])
            expand(pair, expand(pair, 0))
            return at + 1
        else:
            entry = list(_entry(*packing.phrases[CODES.index(code) - len(packing.pairs)]))
        offset, length = entry[0] | (entry[1] & 0x0F) << 8, (entry[1] >> 4) + 1
        inner = offset
        for _ in range(length):
            inner = expand(array, inner)
        return at + 1

    at = 0
    while at < len(codes):
        at = expand(codes, at)
    if out.count(0) != 1 or out[-1] != 0:
        raise AssertionError("a text's codes must expand to it and one NUL at the end")
    return bytes(out[:-1]).decode("ascii")


def table(packing: Packing) -> list[tuple[int, int]]:
    """The two bytes of each code's entry, by slot (unused slots 0): a pair's two codes, a
    phrase's _entry."""
    entries = [*packing.pairs, *(_entry(offset, length) for offset, length in packing.phrases)]
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
    the builds with MK_TEST_HOOKS only (they are last in the array, and no phrase's first
    occurrence is theirs)."""
    texts = [value for _, value in entries]
    packing = pack(texts, tests)
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
        f"{size - sum(len(c) for c in packing.texts[len(texts) - tests:])} packed */",
        f"#define MK_TEXT_LONGEST {max(len(t) for t in texts)}u",
        "",
        "/* a code c at least 0x80, or a control byte but a newline and a NUL, stands for others:",
        " * its entry e is mk_text_codes[(c + 0x80) % 256] (the slots of 0x00 and 0x0A unused),",
        " * or for MK_TEXT_INLINE the two bytes after it; below slot MK_TEXT_PAIRS, a pair of",
        " * codes, else a phrase: the codes at offset e[0] | (e[1] & 15) << 8 of mk_text_packed,",
        " * (e[1] >> 4) + 1 of them */",
        f"#define MK_TEXT_INLINE 0x{INLINE:02X}u",
        f"#define MK_TEXT_PAIRS {len(packing.pairs)}u",
        f"static const uint8_t mk_text_codes[{len(code_table)}][2] = {{",
    ]
    lines += ["    " + " ".join(f"{{0x{a:02x}, 0x{b:02x}}}," for a, b in code_table[k:k + 6])
              for k in range(0, len(code_table), 6)]
    lines += ["};", "",
              "/* each text's codes (the last expands to its NUL), in the order of texts.def */",
              "static const uint8_t mk_text_packed[] = {"]
    for k, ((name, _), codes) in enumerate(zip(entries, packing.texts)):
        if k == len(entries) - tests:
            lines.append("#if MK_TEST_HOOKS")
        lines.append(f"    /* {name} */")
        lines += _bytes(codes, "    ")
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
