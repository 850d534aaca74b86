"""How the playground names a feature by number: `#123`, `123`, `feature 123`, `feature #123`.

One rule for the find dialog, the engine's label search and the command palette. No
torch here: the TUI imports it at startup.
"""

from __future__ import annotations

import re

FEATURE_NUMBER = re.compile(r"(?:feature\s*)?#?(\d+)")


def feature_number(query: str) -> int | None:
    """The feature a query names by number, or None when it is not a number."""
    match = FEATURE_NUMBER.fullmatch(query.strip())
    return int(match.group(1)) if match else None
