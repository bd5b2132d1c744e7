"""The one error of the cluster side: a Ray cluster that cannot be reached, or a refused `taugate cluster` command."""

from __future__ import annotations

from trainables.errors import TauGateError


class ClusterError(TauGateError, RuntimeError):
    """A Ray cluster that cannot be reached (--address) or a refusal of `taugate cluster`: a message for
    the user, and the exit code of a `taugate cluster` refusal (2) or failure (1)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code
