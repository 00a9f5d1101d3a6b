"""caioc: EPICS Channel Access in pure Python, for IOCs on small Linux boards.

The protocol core is :mod:`caioc.ca`; servers, clients, the IOC toolkit and
the hardware layer build on it.
"""

__version__ = "0.1.0.dev0"
__all__ = ["__version__"]
