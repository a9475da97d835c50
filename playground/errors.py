"""The named errors every layer raises: the ground floor (it imports nothing of the playground).

Each is a ValueError whose message names the bad value and what is accepted, so the UI can show it
as it is (`playground.ui.common.shows_errors` turns it into `gr.Error`).
"""

from __future__ import annotations


class InvalidRequest(ValueError):
    """A request value out of range; the message names it and the allowed range."""


class OutOfMemory(InvalidRequest):
    """The device ran out of memory; the message suggests what to make smaller."""


class ControlNetUnavailable(InvalidRequest):
    """The ControlNet's weights could not be loaded (offline, not cached, bad id)."""


class Cancelled(Exception):
    """Raised inside the loop when the caller's cancel event is set (Stop, or the browser left)."""
