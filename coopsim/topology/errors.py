"""The one exception of the topology package."""

from __future__ import annotations


class TopologyError(ValueError):
    """A topology spec is invalid, or cannot be found or parsed.

    The message is always ``"<file>: <key.path>: expected <what>, got <value>"`` so that the
    user can go straight to the offending line. The parts are kept as attributes:
    ``file`` (the YAML path, a bundled name, or ``"<mapping>"``), ``key_path`` (like
    ``"links[2].bandwidth_GBps"``; ``"line 3, column 5"`` for a YAML syntax error),
    ``expected`` and ``got``.
    """

    def __init__(self, file: str, key_path: str, expected: str, got: str):
        self.file = str(file)
        self.key_path = key_path
        self.expected = expected
        self.got = got
        super().__init__(f"{self.file}: {key_path}: expected {expected}, got {got}")

    def __reduce__(self):
        return type(self), (self.file, self.key_path, self.expected, self.got)
