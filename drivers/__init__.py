"""Device drivers, one module per device family (installed as ``caioc.drivers``).

Empty until the hardware layer lands; see docs/ for the plan.
"""
