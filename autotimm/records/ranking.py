"""Ranking runs: completed runs by the objective, then pruned ones, then the rest."""

from __future__ import annotations

from autotimm.records.runs import Run

# the order of the groups: a pruned trial stopped early, so its value is not comparable
# with a completed one's, but it says more about the search space than a failure does
COMPLETED, PRUNED, OTHER = 0, 1, 2


def group(run: Run, metric: str | None = None) -> int:
    """COMPLETED or PRUNED when the run has a value for `metric`, OTHER otherwise."""
    if run.metric(metric or run.objective_name) is None:
        return OTHER
    return {"completed": COMPLETED, "pruned": PRUNED}.get(run.status, OTHER)


def rank(runs: list[Run], metric: str | None = None) -> list[Run]:
    """Completed runs best first (by the objective or `metric`), then pruned ones by
    their value, then failed, interrupted, incomplete and unreadable ones as found."""

    def key(run: Run) -> tuple[int, float]:
        where = group(run, metric)
        if where == OTHER:
            return (where, 0.0)
        value = run.metric(metric or run.objective_name) or 0.0
        return (where, -value if run.mode_of(metric) == "max" else value)

    return sorted(runs, key=key)
