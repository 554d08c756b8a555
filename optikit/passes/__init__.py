"""Passes: registered transformations that turn one Variant into a new one (see `optikit passes`)."""
from optikit.passes.base import Pass, PassContext, passes, plan_chain, run_chain

__all__ = ["Pass", "PassContext", "passes", "plan_chain", "run_chain"]
