"""Runnable example IOCs: ``python -m caioc.ioc_examples.simple --list-pvs``."""
