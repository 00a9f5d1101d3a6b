"""Tests of the hardware layer, caioc.hw."""
