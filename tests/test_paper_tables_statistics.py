"""benchmarks/paper_tables.py: the paired interval and the curve summary, by hand and by SciPy."""

import os
import sys

import numpy as np
from scipy import stats

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import paper_tables as pt  # noqa: E402


def test_paired_interval_is_scipys_paired_t_interval():
    a = [98.0, 100.0, 71.5, 100.0, 88.0]
    b = [50.0, 47.5, 52.0, 49.0, 51.5]
    result = pt.paired_interval(a, b)
    low, high = stats.ttest_rel(a, b).confidence_interval(0.95)
    np.testing.assert_allclose(result["ci95"], [low, high], rtol=1e-10)
    assert result["mean_difference"] == np.mean(np.subtract(a, b))
    assert (result["positive"], result["negative"], result["verdict"]) == (5, 0, "holds")
    # The margin moves the threshold, not the interval: +40 is not shown above +45.
    assert pt.paired_interval(a, b, margin=45.0)["verdict"] == "not shown"
    mixed = pt.paired_interval([60.0, 40.0, 55.0], [50.0, 50.0, 50.0])
    assert (mixed["positive"], mixed["negative"], mixed["verdict"]) == (2, 1, "not shown")


def test_curve_summary_by_hand():
    curve = [{"step": s, "top1": t, "top1_moving_bn": 50.0}
             for s, t in ((0, 50.0), (25, 50.0), (50, 100.0), (75, 100.0), (100, 100.0))]
    summary = pt.summarise_curve(curve, budget=100)
    # Trapezoids: 25 * (50 + 75 + 100 + 100) / 100.
    assert summary["area"] == 81.25
    assert summary["area_second_half"] == 100.0
    assert summary["steps_to_90"] == 50 and summary["final"] == 100.0
    assert pt.summarise_curve(curve[:2], budget=100)["steps_to_90"] == 100  # never: budget
