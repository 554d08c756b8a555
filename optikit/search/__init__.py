"""Search: Optuna explores pass chains and settings (latency or size vs loss); every trial is a cached matrix cell."""
from optikit.search.space import SearchSpace
from optikit.search.study import SearchConfig, SearchOutcome, TrialOutcome, search

__all__ = ["SearchConfig", "SearchOutcome", "SearchSpace", "TrialOutcome", "search"]
