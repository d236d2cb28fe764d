"""stages/spread.py: a result's mean and 95 % interval over seeds, and paired verdicts, against scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from stages.spread import curve_band, mean_curve, metrics_over_seeds, paired_verdict, seed_curves, spread, t_975


def test_the_t_quantile_is_scipys_for_every_count_of_seeds():
    for df in range(1, 1001):
        assert t_975(df) == pytest.approx(stats.t.ppf(0.975, df), rel=4e-6), df
    with pytest.raises(ValueError, match="degrees of freedom must be >= 1"):
        t_975(0)


@pytest.mark.parametrize("values", [[0.9795, 0.9811, 0.9788, 0.9802, 0.9817], [1.0, 2.0], list(np.linspace(-3, 8, 37))])
def test_the_spread_is_the_mean_and_scipys_t_interval(values):
    found = spread(values)
    mean, sem = np.mean(values), stats.sem(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
    assert (found.mean, found.n) == (pytest.approx(mean), len(values))
    assert found.sd == pytest.approx(np.std(values, ddof=1))
    assert (found.low, found.high) == (pytest.approx(low, rel=1e-6), pytest.approx(high, rel=1e-6))


def test_a_known_interval_and_one_value_without_one():
    five = spread([1, 2, 3, 4, 5])  # sd sqrt(2.5); 2.776445 * sqrt(2.5 / 5) = 1.963243
    assert five.mean == 3 and five.sd == pytest.approx(math.sqrt(2.5))
    assert (five.low, five.high) == (pytest.approx(3 - 1.963243, abs=1e-6), pytest.approx(3 + 1.963243, abs=1e-6))
    assert five.covers(4.9) and not five.covers(5.0) and five.excludes(5.0) and not five.excludes(3.0)
    one = spread([0.98])
    assert (one.mean, one.sd, one.low, one.high, one.n) == (0.98, None, None, None, 1)
    assert not one.covers(0.98) and not one.excludes(0.5)  # unknown: neither


@pytest.mark.parametrize("values", [[], [1.0, float("nan")], [[1.0, 2.0]]])
def test_a_spread_of_nothing_or_of_non_finite_values_is_refused(values):
    with pytest.raises(ValueError, match="one or more finite values"):
        spread(values)


BASELINE = [0.970, 0.975, 0.972, 0.978, 0.974]


def test_a_clear_gain_helps_and_a_clear_loss_hurts_with_their_numbers():
    gain = paired_verdict([value + 0.004 + 0.0005 * i for i, value in enumerate(BASELINE)], BASELINE,
                          higher_is_better=True)
    assert gain.word == "helps" and gain.difference.low > 0
    assert gain.sentence().startswith("helps: +0.005 [+0.00") and gain.sentence().endswith("over 5 seeds")
    loss = paired_verdict([value + 0.004 + 0.0005 * i for i, value in enumerate(BASELINE)], BASELINE,
                          higher_is_better=False)  # the same rise of an error metric
    assert loss.word == "hurts"


def test_an_interval_across_zero_cannot_tell_though_the_means_differ():
    noisy = [value + delta for value, delta in zip(BASELINE, [0.006, -0.004, 0.005, -0.003, 0.004])]
    assert np.mean(noisy) > np.mean(BASELINE)  # a naive comparison of means would say "helps"
    verdict = paired_verdict(noisy, BASELINE, higher_is_better=True)
    assert verdict.word == "cannot tell" and verdict.difference.low < 0 < verdict.difference.high
    assert verdict.sentence().startswith("cannot tell at 5 seeds: +0.0016 [")


def test_pairing_is_seed_by_seed():
    # A shift far below the seeds' spread, the same for every seed: only the paired comparison sees it.
    spread_out = [0.90, 0.95, 0.99, 0.93, 0.97]
    shifted = [value + 0.001 for value in spread_out]
    assert paired_verdict(shifted, spread_out, higher_is_better=True).word == "helps"
    assert spread(shifted).covers(spread(spread_out).mean)  # unpaired, the intervals overlap
    with pytest.raises(ValueError, match="paired seeds: 2 values against 3"):
        paired_verdict([1.0, 2.0], [1.0, 2.0, 3.0], higher_is_better=True)
    assert paired_verdict([0.9], [0.8], higher_is_better=True).sentence() == "cannot tell from one seed: +0.1"


# --- results over seeds: learning curves and metrics documents ---

def seed_curve(epochs: int, offset: float) -> pd.DataFrame:
    epoch = np.arange(1, epochs + 1)
    return pd.DataFrame({"epoch": epoch, "train/loss": 1.0 / epoch + offset, "val/loss": 2.0 / epoch + offset})


def test_curves_over_seeds_average_each_epoch_over_the_seeds_that_ran_it():
    curves = {42: seed_curve(4, 0.0), 43: seed_curve(3, 0.3), 44: seed_curve(4, 0.6)}  # 43 stopped early
    table = seed_curves(curves)
    assert list(table.columns) == ["seed", "epoch", "train/loss", "val/loss"] and len(table) == 11
    mean = mean_curve(curves)
    assert mean["epoch"].tolist() == [1, 2, 3, 4]
    assert mean["val/loss"].tolist() == pytest.approx([2.3, 1.3, 2 / 3 + 0.3, 0.5 + 0.3])  # epoch 4: seeds 42, 44
    band = curve_band(curves).set_index(["curve", "epoch"])
    assert band.loc[("val/loss", 3), "seeds"] == 3 and band.loc[("val/loss", 4), "seeds"] == 2
    expected = stats.t.interval(0.95, 2, loc=np.mean([2 / 3, 2 / 3 + 0.3, 2 / 3 + 0.6]),
                                scale=stats.sem([2 / 3, 2 / 3 + 0.3, 2 / 3 + 0.6]))
    assert (band.loc[("val/loss", 3), "low"], band.loc[("val/loss", 3), "high"]) == pytest.approx(expected, rel=1e-5)
    assert mean_curve({42: curves[42]}) is curves[42]  # one seed: its own curve, to the bit
    lone = curve_band({42: curves[42]})
    assert lone["low"].isna().all() and lone["high"].isna().all() and (lone["seeds"] == 1).all()


def test_the_metrics_document_holds_each_seed_and_each_metrics_spread():
    per_seed = {43: {"test/accuracy": 0.97, "val/loss": 0.12}, 42: {"test/accuracy": 0.98, "val/loss": 0.10},
                44: {"test/accuracy": 0.99, "val/loss": 0.11}}
    document = metrics_over_seeds(per_seed)
    assert document["mean"] == pytest.approx({"test/accuracy": 0.98, "val/loss": 0.11})
    over = spread([0.97, 0.98, 0.99])
    assert document["spread"]["test/accuracy"] == pytest.approx(
        {"sd": over.sd, "low": over.low, "high": over.high, "n": 3})
    assert list(document["seeds"]) == ["43", "42", "44"] and document["seeds"]["43"] == per_seed[43]
    one = metrics_over_seeds({42: {"val/loss": 0.1}})
    assert one["spread"]["val/loss"] == {"sd": None, "low": None, "high": None, "n": 1}
