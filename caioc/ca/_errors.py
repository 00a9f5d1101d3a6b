"""The two error classes at the boundary of the protocol core.

Anything else that escapes the core is a bug in caioc.
"""

from __future__ import annotations

__all__ = ["CaiocError", "LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class CaiocError(Exception):
    """Base class of every error caioc raises on purpose."""


class ProtocolError(CaiocError):
    """Something illegal under the Channel Access protocol happened."""


class LocalProtocolError(ProtocolError, ValueError):
    """We were asked to build or send something the protocol forbids.

    Raised before any byte leaves the core, so nothing is lost: fix the
    call and try again.
    """


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids.

    The message says what arrived and why it is illegal. The circuit (or
    datagram) it came from cannot be trusted after this.
    """
