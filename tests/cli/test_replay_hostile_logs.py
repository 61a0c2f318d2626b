"""200k frames with malformed lines sprinkled in, in each log format: replay exits 0, decodes
every good frame and counts the bad lines (the issue's Done-when; one file per format)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from frames import EV_CONFIG, START, encode
from logfiles import FORMATS, frame_lines, write

from agent.cli import main

pytestmark = pytest.mark.slow

N = 200_000
EVERY = 1000  # a bad line after every 1000th good one


def payloads() -> list[bytes]:
    """10,000 different BMS_Status payloads: consecutive frames always differ, so each decodes."""
    return [encode("BMS_Status", SOC=i / 100, PackVoltage=380.0, PackCurrent=-12.0)[1] for i in range(10_000)]


def good_frames() -> list[tuple[float, int, bytes]]:
    fid = encode("BMS_Status", SOC=0)[0]
    data = payloads()
    return [(START + i * 0.001, fid, data[i % len(data)]) for i in range(N)]


def sprinkle(path: Path) -> int:
    """Insert a bad line after every EVERY-th frame line and cut the last one; the bad count."""
    lines = path.read_text().splitlines(keepends=True)
    where = frame_lines(path)
    bad = 0
    for k, i in enumerate(reversed(where[EVERY - 1:-1:EVERY])):
        line = lines[i]
        broken = line[:len(line) // 2] + "\n" if k % 2 or path.suffix == ".asc" else "#!? not a frame \x7f\n"
        lines.insert(i + 1, broken)
        bad += 1
    last = where[-1] + bad  # the last frame line, moved down by the inserted lines
    lines[last] = lines[last].rstrip("\n")[:-7]  # cut by a power loss, inside the data bytes
    path.write_text("".join(lines[:last + 1]))
    return bad + 1


def counters(stderr: str) -> dict[str, int]:
    summary = next(line for line in stderr.splitlines() if "frames read" in line)
    found = {k: int(v) for v, k in re.findall(r"(\d+) (frames read|decoded|unchanged)", summary)}
    found.update({k: int(v) for k, v in re.findall(r"(\w+) (\d+)", summary.split("dropped:")[1])})
    return found


@pytest.mark.parametrize("suffix", FORMATS)
def test_200k_frames_with_bad_lines_replay_to_the_end(tmp_path: Path, suffix: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / f"hostile{suffix}", good_frames())
    if suffix == ".blf":  # binary: no lines; a power loss cuts the file inside its last container
        data = path.read_bytes()
        path.write_bytes(data[:len(data) - 100])
        bad = 1
    else:
        bad = sprinkle(path)
    assert main(["replay", "--config", str(EV_CONFIG), str(path)]) == 0
    c = counters(capsys.readouterr().err)
    assert c["malformed_line"] == bad, c
    good = c["frames read"] - bad
    if suffix == ".blf":
        assert good > N - 1000  # the frames up to the cut
    else:
        assert good == N - 1  # all but the one cut by the power loss
    assert c["decoded"] == good and c.get("unchanged", 0) == 0, c
