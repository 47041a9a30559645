"""`safe_next`: where the login page may send the browser afterwards — only paths of this app."""

from __future__ import annotations

import pytest

from vgen_app.services.cookies import safe_next


@pytest.mark.parametrize(
    ("asked", "sent_to"),
    [
        ("/tokens?x=1", "/tokens?x=1"),
        ("/tasks/abc", "/tasks/abc"),
        (None, "/"),
        ("https://evil.example", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/\t/evil.example", "/"),  # a browser drops the tab: "//evil.example"
        ("/\n/evil.example", "/"),
        ("/a\x00b", "/"),
    ],
)
def test_only_paths_of_this_app(asked: str | None, sent_to: str) -> None:
    assert safe_next(asked) == sent_to
