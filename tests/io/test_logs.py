"""Log readers: a bad line is a counted bad frame, never the end of a replay; GVRET variants; clocks."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from frames import START
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from logfiles import TEXT_FORMATS, frame_lines, write

from agent.core.errors import SourceError
from agent.io.logs import LogReport
from agent.io.sources import read_log


def frames(n: int, start: float = START, step: float = 0.01) -> list[tuple[float, int, bytes]]:
    return [(start + i * step, 0x100 + i % 7, bytes((i + k) % 256 for k in range(8))) for i in range(n)]


def read(path: Path, start_time: datetime | None = None) -> tuple[list[tuple[float, int | None, bytes]], LogReport]:
    report = LogReport(path)
    return list(read_log(path, start_time, report)), report


def test_a_line_that_is_no_candump_frame_is_counted_and_reading_goes_on(tmp_path: Path) -> None:
    # The case: python-can's reader ended with "too many values to unpack (expected 3)".
    path = write(tmp_path / "a.log", frames(100))
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(50, "Bus off (not a frame) at 12:00\n")
    path.write_text("".join(lines))
    got, report = read(path)
    assert [f[1:] for f in got] == [f[1:] for f in frames(100)]
    assert report.malformed_lines == 1 and "line 51" in report.examples[0]
    assert "1 malformed line(s)" in report.warnings()[0]


@pytest.mark.parametrize("suffix", TEXT_FORMATS)
def test_a_last_line_cut_by_a_power_loss_is_counted_in_every_text_format(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"a{suffix}", frames(50))
    lines = path.read_text().splitlines(keepends=True)
    last = frame_lines(path)[-1]
    lines[last] = lines[last].rstrip("\n")[:-7]  # cut inside the data bytes, no newline
    path.write_text("".join(lines[:last + 1]))
    got, report = read(path)
    assert len(got) == 49 and report.malformed_lines == 1, report.examples
    assert [f[1:] for f in got] == [f[1:] for f in frames(49)]


def test_a_blf_cut_short_is_read_up_to_the_cut_and_counted(tmp_path: Path) -> None:
    path = write(tmp_path / "a.blf", frames(5000))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 10])
    got, report = read(path)
    assert 4900 < len(got) < 5000 and report.malformed_lines == 1, report.examples
    assert [f[1:] for f in got] == [f[1:] for f in frames(len(got))]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1))
def test_a_blf_cut_anywhere_never_raises_mid_file_and_yields_a_prefix(cut: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / "a.blf", frames(300))
        clean, _ = read(path)
        data = path.read_bytes()
        path.write_bytes(data[:cut % len(data)])
        try:
            got, _report = read(path)
        except SourceError as exc:  # cut inside the header or before the first frame
            assert "cannot read BLF" in str(exc) or "no readable frame" in str(exc)
            return
    assert got == clean[:len(got)]


garble = st.one_of(
    st.tuples(st.just("cut"), st.floats(0.0, 1.0)),  # the line cut short at a fraction of it
    st.tuples(st.just("text"), st.text(max_size=60)),  # the line replaced by anything
    st.tuples(st.just("bytes"), st.binary(min_size=1, max_size=40)),  # raw garbage in the file
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TEXT_FORMATS), st.lists(st.tuples(st.integers(0, 39), garble), min_size=1, max_size=8))
def test_garbled_lines_never_end_reading_and_every_good_frame_comes_through(
        suffix: str, damage: list[tuple[int, tuple[str, object]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / f"a{suffix}", frames(40))
        clean, _ = read(path)
        raw = path.read_bytes().split(b"\n")
        where = frame_lines(path)
        hit: dict[int, tuple[str, object]] = {}
        for i, how in damage:
            hit[where[i]] = how
        for line, (kind, arg) in hit.items():
            text = raw[line]
            if kind == "cut":
                raw[line] = text[:int(len(text) * float(arg))]  # type: ignore[arg-type]
            elif kind == "text":
                raw[line] = str(arg).replace("\n", " ").replace("\r", " ").encode("utf-8", "surrogatepass")
            else:
                raw[line] = bytes(arg).replace(b"\n", b" ").replace(b"\r", b" ")  # type: ignore[call-overload]
        path.write_bytes(b"\n".join(raw))
        try:
            got, report = read(path)
        except SourceError as exc:  # every frame line garbled: nothing readable at all
            assert "no readable frame" in str(exc) and len(hit) == len(where)
            return
    good = [frame for i, frame in enumerate(clean) if where[i] not in hit]
    it = iter(got)
    assert all(any(g == frame for g in it) for frame in good), "a good frame was lost or reordered"
    assert len(got) - len(good) <= len(hit) and report.malformed_lines <= len(hit)


# -- SavvyCAN/GVRET variants -----------------------------------------------------------------

def test_a_gvret_csv_with_a_byte_order_mark_reads_like_the_plain_one(tmp_path: Path) -> None:
    plain = write(tmp_path / "plain.csv", frames(30))
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert read(bom)[0] == read(plain)[0] and len(read(bom)[0]) == 30


def test_a_gvret_csv_with_dlc_instead_of_len_reads_like_the_plain_one(tmp_path: Path) -> None:
    plain = write(tmp_path / "plain.csv", frames(30))
    dlc = tmp_path / "dlc.csv"
    dlc.write_text(plain.read_text().replace(",LEN,", ",DLC,", 1))
    assert read(dlc)[0] == read(plain)[0] and len(read(dlc)[0]) == 30


def test_a_csv_that_is_not_gvret_is_refused_naming_its_header(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("time,id,data\n1,100,00\n")
    with pytest.raises(SourceError, match="first column must be 'Time Stamp'.*time,id,data"):
        read(path)


def test_a_time_stamp_column_holding_the_row_number_is_called_impossible(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.csv", frames(2000, start=0.0, step=1e-6))  # 1 us a frame
    got, report = read(path)
    assert len(got) == 2000
    warning = next(w for w in report.warnings() if "frames/s" in w)
    assert "1,000,000 frames/s" in warning and "more than 1 CAN bus" in warning and "row number" in warning


def test_a_busy_but_possible_log_is_not_called_impossible(tmp_path: Path) -> None:
    path = write(tmp_path / "busy.log", frames(5000, step=1 / 9000))  # a saturated 1 Mbit/s bus
    _got, report = read(path)
    assert not any("frames/s" in w for w in report.warnings())


# -- relative clocks -------------------------------------------------------------------------

def test_a_log_starting_near_zero_warns_and_points_at_start_time(tmp_path: Path) -> None:
    path = write(tmp_path / "rel.log", frames(10, start=12.5))
    _got, report = read(path)
    warning = next(w for w in report.warnings() if "--start-time" in w)
    assert "12.500 s" in warning and "1970-01-01" in warning


def test_start_time_anchors_a_relative_log_and_silences_the_warning(tmp_path: Path) -> None:
    path = write(tmp_path / "rel.log", frames(10, start=12.5))
    when = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    got, report = read(path, when)
    assert got[0][0] == when.timestamp() and abs(got[-1][0] - got[0][0] - 0.09) < 1e-6
    assert report.warnings() == []


def test_an_absolute_log_gives_no_warning(tmp_path: Path) -> None:
    _got, report = read(write(tmp_path / "abs.log", frames(10)))
    assert report.warnings() == []


def test_the_asc_header_date_is_offered_as_the_start_time(realdata: Path) -> None:
    _got, report = read(realdata / "kona/bms-idle-30s.asc")
    warning = next(w for w in report.warnings() if "--start-time" in w)
    assert "--start-time 2023-11-09T20:36:33Z" in warning


def test_a_file_with_no_readable_frame_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.log"
    path.write_bytes(b"\x00\x01\x02 not a log\nreally not\n")
    with pytest.raises(SourceError, match="no readable frame, 2 malformed line"):
        read(path)


def test_error_frames_and_remote_frames_of_a_candump_log(tmp_path: Path) -> None:
    path = tmp_path / "e.log"
    path.write_text(f"({START:.6f}) can0 20000080#0000000000000000\n({START:.6f}) can0 123#R\n"
                    f"({START:.6f}) can0 123#01\n")
    got, report = read(path)
    assert got == [(START, None, b""), (START, 0x123, b"\x01")] and report.malformed_lines == 0


def test_realdata_captures_read_without_a_malformed_line(realdata: Path) -> None:
    for name, n in (("kona/bms-idle-30s.asc", 5934), ("kona/230112-7-2019-pcan-ccan-power-off-on-ready-off.csv", 39546),
                    ("tesla/openccs-2019-model3.csv", 14991)):
        got, report = read(realdata / name)
        assert len(got) == n and report.malformed_lines == 0, (name, report.examples)
