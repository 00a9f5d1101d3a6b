"""Board definitions and ready board files (installed as ``caioc.boards``).

Empty until the hardware layer lands; see docs/ for the plan.
"""
