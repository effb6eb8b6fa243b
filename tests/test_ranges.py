"""The byte-range set both ends of an upload keep, against a plain set of offsets."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from export.contract.ranges import ByteRanges

spans = st.tuples(st.integers(0, 200), st.integers(0, 60)).map(lambda t: (t[0], t[0] + t[1]))


def offsets(ranges: ByteRanges) -> set[int]:
    return {i for a, b in ranges for i in range(a, b)}


def well_formed(ranges: ByteRanges) -> bool:
    """Sorted, non-empty ranges with a gap between each and the next."""
    pairs = list(ranges)
    return all(a < b for a, b in pairs) and all(
        b1 < a2 for (_, b1), (a2, _) in zip(pairs, pairs[1:])
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(spans, max_size=12), st.integers(0, 260))
def test_added_ranges_hold_exactly_their_bytes_and_cutting_drops_those_below(added, cut):
    ranges = ByteRanges(added)
    model = {i for a, b in added for i in range(a, b)}
    assert offsets(ranges) == model and ranges.size == len(model) and well_formed(ranges)
    ranges.discard_below(cut)
    assert offsets(ranges) == {i for i in model if i >= cut} and well_formed(ranges)


@settings(max_examples=300, deadline=None)
@given(st.lists(spans, max_size=12), spans)
def test_gaps_are_the_missing_bytes_of_a_span_in_order(added, span):
    ranges = ByteRanges(added)
    gaps = ranges.gaps(*span)
    assert {i for a, b in gaps for i in range(a, b)} == set(range(*span)) - offsets(ranges)
    assert well_formed(ByteRanges(gaps)) and len(ByteRanges(gaps)) == len(gaps)


@settings(max_examples=300, deadline=None)
@given(st.lists(spans, max_size=12), st.integers(0, 260))
def test_a_run_ends_at_the_first_offset_not_in_the_set(added, start):
    ranges = ByteRanges(added)
    end = ranges.run_end(start)
    assert set(range(start, end)) <= offsets(ranges) and end not in offsets(ranges)


@settings(max_examples=300, deadline=None)
@given(st.lists(spans, min_size=1, max_size=12).filter(lambda s: any(a < b for a, b in s)),
       st.integers(1, 40), st.one_of(st.none(), st.integers(0, 260)))
def test_taking_from_the_front_removes_what_it_returns(added, most, limit):
    ranges = ByteRanges(added)
    before, (first_start, first_end) = offsets(ranges), ranges.first
    assume(limit is None or limit > first_start)
    start, end = ranges.take_first(most, limit)
    assert start == first_start
    assert end == min(first_end, start + most, first_end if limit is None else limit)
    assert offsets(ranges) == before - set(range(start, end)) and well_formed(ranges)


def test_touching_ranges_merge_and_a_copy_is_independent():
    ranges = ByteRanges([(10, 20), (20, 30), (40, 50)])
    assert list(ranges) == [(10, 30), (40, 50)] and len(ranges) == 2
    twin = ranges.copy()
    twin.add(30, 40)
    assert list(twin) == [(10, 50)] and list(ranges) == [(10, 30), (40, 50)]
    assert ranges.pop_first() == (10, 30) and ranges == ByteRanges([(40, 50)])


def test_taking_nothing_is_refused():
    with pytest.raises(ValueError, match="at least one byte"):
        ByteRanges([(40, 50)]).take_first(8, limit=40)
