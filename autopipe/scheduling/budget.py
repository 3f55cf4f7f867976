"""The job's budget: stop proposing once the trials' cost (early-stopped trials counted at
their fraction, since that is what they ran) plus a reserve for the final full-fidelity runs
(``budget.promote`` of them) reaches the cost cap. Ray-free; ``max_trials`` is enforced by Ray
Tune's ``num_samples``."""

from __future__ import annotations

import statistics

from autopipe.scheduling.ledger import Ledger


class BudgetGate:
    def __init__(
        self,
        ledger: Ledger,
        cost_cap_s: float | None,
        early_stop_fraction: float,
        promote: int = 1,
    ) -> None:
        self.ledger = ledger
        self.cost_cap_s = cost_cap_s
        self.early_stop_fraction = early_stop_fraction
        self.promote = int(promote)

    def full_run_cost_s(self) -> float:
        """Median cost of a full run, extrapolated from every trial's cost per fraction."""
        per_full = [
            r.cost_s / r.fraction
            for r in self.ledger.trials.values()
            if r.fraction > 0 and r.cost_s > 0
        ]
        return statistics.median(per_full) if per_full else 0.0

    def reserve_s(self) -> float:
        """What the final runs still cost: ``promote`` early-stopped trials resume from their
        early point."""
        if self.early_stop_fraction >= 1.0:
            return 0.0
        return self.promote * (1.0 - self.early_stop_fraction) * self.full_run_cost_s()

    def exhausted(self) -> bool:
        if self.cost_cap_s is None:
            return False
        return self.ledger.spent_s() + self.reserve_s() >= self.cost_cap_s
