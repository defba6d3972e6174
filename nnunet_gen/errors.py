"""The one error type our commands turn into a one-line message and a non-zero exit."""
from __future__ import annotations


class DataError(ValueError):
    """Bad input: the message names the case (or dataset) and the problem on one line."""

    def __init__(self, where: str, problem: str):
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):
        """Picklable with its own arguments, so it crosses process pools and submitit jobs intact."""
        return DataError, (self.where, self.problem)
