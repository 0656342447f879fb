"""What the browser's console says while a page runs a notebook: errors and uncaught page errors,
each with the phase of the test it came in, counted by kind.

bqplot reports bad state in the console while the page still "works" (a figure laid out at width 0
sets negative <rect> sizes; a line whose last point has no y is placed at ``translate(x,undefined)``;
an axis format on a zero-width domain is ``invalid format: .undefinedg``): these tests read the
console, not only the page.
"""

from __future__ import annotations

import re
from collections import Counter

#: not a view's error: a request the server answered 404 (a missing favicon or settings file)
IGNORED = ("Failed to load resource",)


def kind(text: str) -> str:
    """The message without its numbers: 'Error: <rect> attribute width: A negative value ... ("-N")'."""
    return re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "N", text)[:160]


class ConsoleErrors:
    """Collects ``page``'s console errors and page errors from now on; ``phase`` labels them."""

    def __init__(self, page, phase: str = "loading"):
        self.phase = phase
        self.errors: list[tuple[str, str]] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append((self.phase, f"page error: {e}")))

    def _console(self, msg) -> None:
        if msg.type == "error" and not any(s in msg.text for s in IGNORED):
            self.errors.append((self.phase, msg.text))

    def counts(self) -> Counter:
        """(phase, kind) -> how many."""
        return Counter((phase, kind(text)) for phase, text in self.errors)

    def summary(self) -> str:
        return f"{len(self.errors)} console errors: " + "; ".join(
            f"{n} x [{phase}] {k}" for (phase, k), n in self.counts().most_common(12)
        )
