"""The control plane's errors, by whose fault they are.

    ControlError          a user or client can act on it; the text says how
      Invalid             input refused (validation); carries every fault
      NotFound            no such object, or not visible to this actor
      Forbidden           the actor may not do this (customer on staff action)
      Conflict            the object's state forbids it (approve a rejected one)
    StoreUnavailable      the database cannot be reached; retry later

The CLI prints ControlError text as one line; the API maps the classes to
422, 404, 403 and 409. Messages never contain secrets or stack traces.
"""

from __future__ import annotations


class ControlError(Exception):
    """A refusal the caller can act on."""


class Invalid(ControlError):
    def __init__(self, problems: list[str] | str) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems = problems
        super().__init__("; ".join(problems))


class NotFound(ControlError):
    pass


class Forbidden(ControlError):
    pass


class Conflict(ControlError):
    pass


class StoreUnavailable(Exception):
    """The store cannot be reached (network, server down, locked too long)."""
