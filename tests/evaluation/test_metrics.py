import numpy as np
import pytest

from boneage.evaluation import (
    age_group,
    compute_metrics,
    format_metrics_table,
    plot_agreement,
)


def test_metrics_closed_form():
    true = np.array([12.0, 60.0, 100.0, 150.0, 200.0])
    pred = true + np.array([2.0, -4.0, 6.0, 0.0, -10.0])
    m = compute_metrics(pred, true, ["M", "F", "M", "F", "M"])
    assert m["n"] == 5 and m["mae_months"] == pytest.approx(4.4)
    assert m["rmse_months"] == pytest.approx(np.sqrt((4 + 16 + 36 + 0 + 100) / 5), abs=1e-3)
    assert m["median_ae_months"] == 4.0 and m["mean_error_months"] == pytest.approx(-1.2)
    assert m["mae_by_sex"] == {"M": pytest.approx(6.0), "F": pytest.approx(2.0)}
    # 12 months -> 0-3 y, 60 -> 4-7 y, 100 -> 8-11 y, 150 -> 12-15 y, 200 -> 16-19 y
    assert m["mae_by_age_group"] == {"0-3": 2.0, "4-7": 4.0, "8-11": 6.0, "12-15": 0.0, "16-19": 10.0}
    assert m["n_by_age_group"] == {"0-3": 1, "4-7": 1, "8-11": 1, "12-15": 1, "16-19": 1}
    assert "| male | 3 | 6.00 |" in format_metrics_table(m)


@pytest.mark.parametrize("months,group", [(0, "0-3"), (47.9, "0-3"), (48, "4-7"), (143.9, "8-11"), (192, "16-19"),
                                          (240, "16-19")])
def test_age_groups_follow_whole_years(months, group):
    assert age_group(months) == group


def test_agreement_plot_is_written(tmp_path):
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 220, 50)
    out = plot_agreement(true + rng.normal(0, 8, 50), true, tmp_path / "p.png", sexes=["M", "F"] * 25)
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"


def test_rank_auc_equals_the_pairwise_count_with_ties_half():
    from boneage.evaluation import rank_auc

    rng = np.random.default_rng(0)
    scores = np.round(rng.random(60), 1)  # many ties
    positive = rng.random(60) < 0.4
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p in scores[positive] for n in scores[~positive]]
    assert rank_auc(scores, positive) == pytest.approx(np.mean(pairs))
    assert rank_auc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert rank_auc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert rank_auc([0.3, 0.4], [True, True]) is None


def test_sex_metrics():
    from boneage.evaluation import sex_metrics

    result = sex_metrics([0.9, 0.6, 0.4, 0.2, 0.7], ["M", "F", "F", "F", "M"], [10, 20, 30, 40, 50], [12, 20, 27, 40, 50])
    assert result["n"] == 5 and result["accuracy"] == pytest.approx(0.8) and result["majority_rate"] == pytest.approx(0.6)
    assert result["auc"] == 1.0 and result["mae_months_sex_unknown"] == pytest.approx(1.0)
