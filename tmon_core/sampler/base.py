"""The three-method contract every sampler collector follows."""

from __future__ import annotations


class Collector:
    """One family of hardware figures.

    ``setup()`` returns None when the collector can work, or the reason it cannot (the
    sampler then disables only this collector and says so once). ``collect()`` returns the
    figures of one sample; ``close()`` releases what ``setup()`` took.
    """

    name = "collector"

    def setup(self) -> str | None:
        return None

    def collect(self):
        raise NotImplementedError

    def close(self) -> None:
        pass
