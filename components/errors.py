"""The one exception type users see.

Every user-facing failure (bad config, missing soundfont, malformed input file)
raises `PartitaError` with a message that names the problem and the fix; the
command-line entry points print it on one line and exit non-zero.
"""


class PartitaError(Exception):
    """A problem the user can fix; `str(err)` is the whole message."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}; fix: {fix}")
