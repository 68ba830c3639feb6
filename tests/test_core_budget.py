"""The CPU budget's choices at its limits (no clock: the governor's factor is set directly).

With the 5% default on real memory the guest's hot/cold tests read hot and cold alike (~0.2
both): the budget had lowered max_nr_regions to min_nr_regions, where regions can never split.
"""

from __future__ import annotations

import pytest

from pydamon.core import Attrs, Context, Target
from pydamon.core.budget import BudgetGovernor, CpuBudget, regions_floor
from pydamon.ops.sim import SimOperations

ASKED = Attrs(
    sample_interval_us=5_000,
    aggr_interval_us=100_000,
    ops_update_interval_us=1_000_000,
    min_nr_regions=10,
    max_nr_regions=1000,
)


def _governor(factor: float, max_stretch: float = 10.0) -> BudgetGovernor:
    governor = BudgetGovernor(CpuBudget(5, max_stretch=max_stretch), ASKED)
    governor.factor = factor
    return governor


@pytest.mark.parametrize("factor", [500.0, 1e4, 1e9])
def test_budget_lowers_max_nr_regions_no_further_than_twice_min(factor):
    chosen = _governor(factor).chosen()
    # twice the minimum: room for every region to split, so hot areas can still be isolated
    assert chosen.max_nr_regions == 2 * ASKED.min_nr_regions


@pytest.mark.parametrize("factor", [20.0, 200.0, 1e9])
def test_budget_stretches_the_intervals_at_most_max_stretch_times(factor):
    chosen = _governor(factor).chosen()
    assert chosen.sample_interval_us == 10 * ASKED.sample_interval_us
    assert chosen.aggr_interval_us == 10 * ASKED.aggr_interval_us
    # the ops update stretches along: it keeps its number of samples
    assert chosen.ops_update_interval_us == 10 * ASKED.ops_update_interval_us


def test_budget_below_its_stretch_limit_keeps_the_regions():
    chosen = _governor(4.0).chosen()
    assert chosen.max_nr_regions == ASKED.max_nr_regions
    assert chosen.sample_interval_us == 4 * ASKED.sample_interval_us
    assert chosen.ops_update_interval_us == 4 * ASKED.ops_update_interval_us


def test_budget_factor_stops_where_nothing_more_changes():
    # 10x stretch x (1000 / 20) regions: past that, F would only wind up
    governor = _governor(1.0)
    assert governor.max_factor == pytest.approx(10 * 1000 / 20)
    assert regions_floor(Attrs(min_nr_regions=10, max_nr_regions=15)) == 15


def test_budget_at_its_floor_still_lets_regions_split_on_a_context():
    # a simulated hot/cold process under an impossible budget: regions still split past min
    asked = Attrs(min_nr_regions=10, max_nr_regions=100)
    ctx = Context(SimOperations("hotcold"), [Target()], asked, seed=1, cpu_budget=5)
    assert ctx.budget is not None
    ctx.budget.factor = 1e6
    ctx.set_attrs(asked)  # the asked attrs again, under the budget's factor
    assert ctx.attrs.max_nr_regions == 20
    ctx.run(nr_aggregations=20)
    assert len(ctx.targets[0].regions) > asked.min_nr_regions
