"""Argument types shared by the command modules."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer of at least 1, with a message that says what was wrong."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class CountBar:
    """A tqdm bar on stderr fed by ``bar(done, total)`` callbacks; drawn only once there is work.

    Use as a context manager so the bar is closed on errors too; disabled
    (``enabled=False``: ``--no-progress``, ``--quiet``) it is a no-op callback.
    """

    def __init__(self, desc: str, *, enabled: bool = True, unit: str = "track") -> None:
        self.desc, self.enabled, self.unit = desc, enabled, unit
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total == 0:
            return
        if self._bar is None:
            import sys

            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
        self._bar.n = done
        self._bar.refresh()

    def __enter__(self) -> CountBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
