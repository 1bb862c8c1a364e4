"""CameraInfoHistory: the CameraInfo of an image by equal stamp, nearest stamp, arrival, or latest."""

from __future__ import annotations

import math

import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from space_clip_ros.msgs.camera_info_history import CameraInfoHistory, format_stamp

SECOND = 1_000_000_000


def info_at(stamp_ns: int, fx: float = 500.0) -> CameraInfo:
    """A CameraInfo stamped ``stamp_ns`` whose fx tells the entries apart."""
    seconds, nanoseconds = divmod(stamp_ns, SECOND)
    return CameraInfo(header=Header(stamp=Time(sec=seconds, nanosec=nanoseconds)), k=[fx, 0, 1, 0, fx, 1, 0, 0, 1])


def fx_of(match) -> float | None:
    return None if match.info is None else float(match.info.k[0])


def test_equal_stamp_wins_over_later_arrivals_and_the_newest_duplicate_is_used():
    history = CameraInfoHistory(tolerance_s=0.05)
    history.add(info_at(10 * SECOND, fx=100.0))
    history.add(info_at(11 * SECOND, fx=200.0))
    history.add(info_at(10 * SECOND, fx=150.0))  # the calibration of stamp 10 was re-sent
    history.add(info_at(12 * SECOND, fx=300.0))
    match = history.lookup(10 * SECOND)
    assert match and match.rule == "exact" and match.offset_ns == 0 and fx_of(match) == 150.0
    assert "10.000000000" in match.description
    assert history.latest.k[0] == 300.0 and len(history) == 4


def test_nearest_stamp_within_the_tolerance_either_side_earlier_on_a_tie():
    history = CameraInfoHistory(tolerance_s=0.02)
    for stamp_ms, fx in ((1000, 1.0), (1033, 2.0), (1066, 3.0)):
        history.add(info_at(stamp_ms * 1_000_000, fx))
    before = history.lookup(1040 * 1_000_000)
    assert before.rule == "nearest" and fx_of(before) == 2.0 and before.offset_ns == -7_000_000
    assert "0.007 s before the image stamp 1.040000000" in before.description
    after = history.lookup(1060 * 1_000_000)
    assert fx_of(after) == 3.0 and after.offset_ns == 6_000_000 and "after" in after.description
    tie = history.lookup(1016_500_000)  # 16.5 ms from 1000 and from 1033
    assert fx_of(tie) == 1.0
    at_limit = history.lookup(1086 * 1_000_000)  # exactly 20 ms after the last one
    assert fx_of(at_limit) == 3.0


def test_no_match_outside_the_tolerance_names_both_stamps():
    history = CameraInfoHistory(tolerance_s=0.02)
    history.add(info_at(11 * SECOND + 500_000_000))
    match = history.lookup(12 * SECOND + 345)
    assert not match and match.info is None and match.rule == "none"
    assert match.offset_ns == -(500_000_000 + 345)
    assert match.description == (
        "no CameraInfo within 0.02 s of the image stamp 12.000000345: the nearest of the 1 kept has "
        "stamp 11.500000000 (0.500 s before)"
    )


def test_empty_history_says_nothing_was_received():
    for tolerance in (0.0, 0.1):
        match = CameraInfoHistory(tolerance_s=tolerance).lookup(5 * SECOND)
        assert not match and match.offset_ns is None
        assert match.description == "no CameraInfo received yet (image stamp 5.000000000)"


def test_tolerance_zero_takes_the_latest_whatever_its_stamp():
    # A camera that publishes CameraInfo once, with a stamp that has nothing to do with the images.
    history = CameraInfoHistory(tolerance_s=0.0)
    history.add(info_at(3, fx=1.0))
    history.add(info_at(2, fx=2.0))
    match = history.lookup(1_700_000_000 * SECOND)
    assert match.rule == "latest" and fx_of(match) == 2.0
    assert "latest CameraInfo, stamp 0.000000002" in match.description
    assert fx_of(history.lookup(3)) == 1.0  # an equal stamp is still preferred
    assert fx_of(CameraInfoHistory(tolerance_s=-1.0, max_size=1).lookup(0)) is None


def test_tolerance_zero_with_arrival_times_is_the_bag_tools_rule():
    # The bag tool's CameraInfoIndex: equal stamp, else the nearest log time.
    history = CameraInfoHistory(tolerance_s=0.0, max_size=None)
    for i, fx in enumerate((100.0, 200.0, 300.0)):
        history.add(info_at((10 + i) * SECOND, fx), arrival_ns=1000 * i)
    assert fx_of(history.lookup(11 * SECOND, arrival_ns=0)) == 200.0
    match = history.lookup(5, arrival_ns=1900)
    assert match.rule == "arrival" and fx_of(match) == 300.0
    assert fx_of(history.lookup(5, arrival_ns=-50)) == 100.0
    assert fx_of(history.lookup(5, arrival_ns=500)) == 100.0  # a tie: the earlier one
    assert history.lookup(5).rule == "latest"  # no arrival time given


def test_oldest_entries_are_forgotten_beyond_max_size():
    history = CameraInfoHistory(tolerance_s=10.0, max_size=3)
    for i in range(5):
        history.add(info_at(i * SECOND, fx=float(i)), arrival_ns=i)
    assert len(history) == 3
    assert fx_of(history.lookup(0)) == 2.0  # 0 and 1 are gone: the nearest kept is 2
    assert fx_of(history.lookup(4 * SECOND)) == 4.0
    history.add(info_at(1 * SECOND, fx=11.0))  # late and out of order, still kept
    assert fx_of(history.lookup(1 * SECOND)) == 11.0 and len(history) == 3
    assert fx_of(history.lookup(2 * SECOND)) == 11.0  # 2 was the oldest added: forgotten
    history.clear()
    assert len(history) == 0 and history.latest is None


def test_many_entries_and_lookups_stay_consistent():
    history = CameraInfoHistory(tolerance_s=math.inf, max_size=50)
    stamps = [(i * 7919) % 1000 for i in range(400)]  # out of order, with repeats
    for sequence, stamp in enumerate(stamps):
        history.add(info_at(stamp, fx=float(sequence)), arrival_ns=stamp)
    kept = list(enumerate(stamps))[-50:]
    for query in range(-5, 1005, 7):
        distance = min(abs(stamp - query) for _, stamp in kept)
        best = [(stamp, sequence) for sequence, stamp in kept if abs(stamp - query) == distance]
        stamp, _ = min(best)  # earlier stamp on a tie
        newest = max(sequence for sequence, s in kept if s == stamp)
        assert fx_of(history.lookup(query)) == float(newest)


def test_header_lookup_and_stamp_format():
    history = CameraInfoHistory(tolerance_s=0.01)
    history.add(info_at(7 * SECOND + 11))
    header = Header(stamp=Time(sec=7, nanosec=11), frame_id="camera")
    assert history.lookup_header(header).rule == "exact"
    assert format_stamp(7 * SECOND + 11) == "7.000000011"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        CameraInfoHistory(tolerance_s=math.nan)
    with pytest.raises(ValueError, match="max_size must be >= 1"):
        CameraInfoHistory(max_size=0)
