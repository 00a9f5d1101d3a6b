"""The four-line tour: simple:A and simple:B (integers), simple:C (floats).

python -m caioc.ioc_examples.simple --list-pvs
caioc-put simple:A 42
"""

from __future__ import annotations

from caioc.ioc import PVGroup, ioc_arg_parser, pvproperty, run


class SimpleIOC(PVGroup):
    """Two integers and an array of floats."""

    A = pvproperty(1, doc="An integer")
    B = pvproperty(2, doc="Another integer")
    C = pvproperty([1.0, 2.0, 3.0], doc="An array of floats")


def main() -> None:
    """Run the example IOC."""
    options, run_options = ioc_arg_parser(default_prefix="simple:", desc=SimpleIOC.__doc__ or "")
    run(SimpleIOC(**options), **run_options)


if __name__ == "__main__":
    main()
