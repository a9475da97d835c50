"""A visitor's session must not grow with every job: a fix for a leak in gradio 6's session state.

When an event yields `gr.skip()` (or any `gr.update(...)`) for an output, gradio builds a fresh, unrendered
copy of that component for the session (`SessionState[id] = Component(**args, render=False)`). The copy gets
a new id of its own. When the next value for that output comes, gradio looks the block up by its old id,
finds the copy, sees the copy's own id missing from the session, and files the copy under it a second time:
one more block and one more config entry in the session, on every job that streams (the Prompt, Grid,
Inspector and ControlNet tabs all hold some outputs with `gr.skip()` while they run). Measured in gradio
6.31: 30 calls of a two-output event that yields `gr.skip()` then a value left 35 blocks in the session,
against 5 without the skip; the Inspector's session held 909 blocks after 50 runs (229 before).

`keep_ids()` makes the copy carry the id of the block it stands for, so it is filed once. The copy is used
for nothing else: gradio reads its props for the update it sends, and the browser knows the block by that
id. `tests/test_reliability.py` checks that a session stays the same size over many jobs.
"""

from __future__ import annotations

import functools

from gradio.blocks import Block
from gradio.state_holder import SessionState


def keep_ids() -> None:
    """Patch gradio's SessionState once per process so a block filed under an id carries that id (idempotent)."""
    setitem = SessionState.__setitem__
    if getattr(setitem, "_keeps_ids", False):
        return

    @functools.wraps(setitem)
    def __setitem__(self, key, value):
        if isinstance(value, Block) and not value.stateful and value._id != key and not value.is_rendered:
            value._id = key  # an unrendered copy made for an update: it stands for block `key`
        setitem(self, key, value)

    __setitem__._keeps_ids = True
    SessionState.__setitem__ = __setitem__


def size(blocks, session: str) -> int:
    """How many blocks the session of `session` (a session hash) holds in gradio's state (0: no such session)."""
    state = blocks.state_holder.session_data.get(session)
    return len(state.blocks_config.blocks) if state is not None else 0
