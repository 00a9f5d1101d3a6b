"""The client's exceptions, and libca's words for ECA codes."""

from __future__ import annotations

from ..ca import ECA
from ..ca._errors import CaiocError

__all__ = ["ChannelTimeout", "ClientError", "Disconnected", "ECA_text", "ServerError"]


class ClientError(CaiocError):
    """Something a CA client operation could not do."""


class ChannelTimeout(ClientError, TimeoutError):
    """No server answered in time."""


class Disconnected(ClientError, ConnectionError):
    """The circuit carrying the channel went away."""


class ServerError(ClientError):
    """The server refused a request; ``eca`` says why, as libca would."""

    def __init__(self, eca: int, message: str) -> None:
        super().__init__(message)
        self.eca = eca


def ECA_text(code: int) -> str:
    """libca's message for an ECA code."""
    try:
        return ECA(code).message  # type: ignore[call-arg]
    except ValueError:
        return f"ECA status {code}"
