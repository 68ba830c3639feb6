"""Per kernel DAMON feature: the first release that has it, and what pydamon does where the
kernel lacks it (:mod:`.emulate`); ``python -m pydamon.kernel.feature_table`` prints the table
of docs/kernel-backend.md."""

from __future__ import annotations

from pydamon.kernel.capabilities import (
    ACTIONS_SINCE,
    FILTER_TYPES_SINCE,
    GOAL_METRICS_SINCE,
    OPERATIONS_SINCE,
)

#: (feature, native since, what pydamon does where the kernel lacks it)
FEATURES: list[tuple[str, str, str]] = [
    ("DAMON sysfs interface", "5.18", "user-space engine only"),
    *[(f"operations set `{o}`", s, "user-space engine only") for o, s in OPERATIONS_SINCE.items()],
    *[(f"action `{a}`", s, "user-space engine only") for a, s in ACTIONS_SINCE.items()],
    ("tried regions (snapshots without tracefs)", "6.2", "results from tracefs; else refused"),
    ("DAMOS filters (any)", "6.3", "user-space engine only"),
    *[(f"filter type `{t}`", s, "user-space engine only") for t, s in FILTER_TYPES_SINCE.items()],
    ("allow filters", "6.14", "emulated by pydamon (as reject filters, where expressible)"),
    ("apply_interval_us", "6.7", "user-space engine only"),
    ("quota goals", "6.8", "emulated by pydamon (esz tuned and committed as the size quota)"),
    *[
        (f"goal metric `{m}`", s, "emulated by pydamon (measured from /proc and /sys)")
        for m, s in GOAL_METRICS_SINCE.items()
    ],
    ("goal tuners `consist`, `temporal`", "7.1", "emulated by pydamon"),
    ("migration target node (target_nid)", "6.11", "user-space engine only"),
    ("intervals auto-tuning (intervals_goal)", "6.15", "emulated by pydamon (from snapshots)"),
    ("several modules at once", "never (the kernel's modules: -EBUSY)", "pydamon's own kdamonds"),
]


def features_table() -> str:
    """The markdown table of :data:`FEATURES` (docs/kernel-backend.md)."""
    lines = ["| feature | native since | where the kernel lacks it |", "|---|---|---|"]
    lines += [f"| {what} | {since} | {how} |" for what, since, how in FEATURES]
    return "\n".join(lines)


if __name__ == "__main__":
    print(features_table())
