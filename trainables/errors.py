"""The product's one error base. Every error the service raises on purpose is a `TauGateError`,
so a caller can catch them all; each keeps the built-in base it always had (`ValueError` for bad
input, `RuntimeError` for a state that cannot go on), so nothing that caught those changes."""


class TauGateError(Exception):
    """Base of every error the service raises on purpose; the message names what is wrong."""
