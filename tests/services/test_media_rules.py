"""The media route's rules: which byte range a Range header asks for, and whose files are whose."""

from __future__ import annotations

import pytest

from vgen_app.services.media import Unsatisfiable, byte_range, content_type

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("bytes=0-0", (0, 0)),
        ("bytes=0-499", (0, 499)),
        ("bytes=500-", (500, 999)),
        ("bytes=-200", (800, 999)),
        ("bytes=-5000", (0, 999)),  # more than there is: all of it
        ("bytes=990-5000", (990, 999)),  # clamped to the last byte
        ("bytes=0-99999999999999999", (0, 999)),
        ("bytes=0-" + "9" * 150, (0, 999)),  # past the end, however many digits: to the end
        ("BYTES = 10-19", (10, 19)),
        ("items=0-5", None),  # a unit we do not know: the whole object (RFC 9110)
    ],
)
def test_satisfiable_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes=1000-",  # starts at the end
        "bytes=99999999999999999-",
        "bytes=999999999999999999999999-",  # too many digits
        "bytes=500-100",  # backwards
        "bytes=-0",
        "bytes=-",
        "bytes=",
        "bytes=0-1,5-9",  # several ranges: not served
        "bytes=0-1, 5-9",
        "bytes=abc-def",
        "bytes=-1-2",
        "bytes=1.5-2",
        "bytes=0x10-",
        "bytes=\x000-1",
        "bytes=0-" + "9" * 300,  # longer than any honest header
        "bytes=²-³",  # digits, but not ASCII ones
    ],
)
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        byte_range(header, SIZE)


def test_an_empty_object_has_no_range() -> None:
    with pytest.raises(Unsatisfiable):
        byte_range("bytes=0-", 0)
    with pytest.raises(Unsatisfiable):
        byte_range("bytes=-1", 0)
    assert byte_range(None, 0) is None


@pytest.mark.parametrize(
    ("key", "kind", "expected"),
    [
        ("inputs/t/video/a.mp4", "video", "video/mp4"),
        ("inputs/t/audio/a.webm", "audio", "audio/webm"),
        ("inputs/t/video/a.webm", "video", "video/webm"),
        ("inputs/t/audio/a.M4A", "audio", "audio/mp4"),
        ("inputs/t/image/a.png", "image", "image/png"),
        ("results/t/r.jpg", "", "image/jpeg"),
        ("inputs/t/x/a.html", "", "application/octet-stream"),  # never served as a page
        ("inputs/t/x/a.svg", "", "application/octet-stream"),
    ],
)
def test_content_types(key: str, kind: str, expected: str) -> None:
    assert content_type(key, kind) == expected
