"""Statistics over seeds against values computed by hand on a fixed table."""

import json
import math

import pytest
from scipy import stats as scipy_stats

from enn.analysis import report, stats
from enn.analysis.summary import summarize

TABLE = {"engram": [0.90, 0.92, 0.94], "lstm": [0.95, 0.96, 0.97], "rnn": [0.80, 0.82, 0.84]}


def test_describe_mean_std_and_ci():
    d = stats.describe([0.90, 0.92, 0.94])
    assert d["mean"] == pytest.approx(0.92)
    assert d["std"] == pytest.approx(0.02)  # sample std (ddof=1)
    # t(0.975, 2) = 4.302653; half-width = t * s / sqrt(n)
    assert d["ci95"] == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-5)
    assert d["n"] == 3


def test_anova_by_hand():
    # grand mean 0.9, group means 0.92, 0.96, 0.82 (n=3 each)
    ss_between = 3 * ((0.92 - 0.9) ** 2 + (0.96 - 0.9) ** 2 + (0.82 - 0.9) ** 2)
    # within groups: deviations -0.02, 0, 0.02 (engram, rnn) and -0.01, 0, 0.01 (lstm)
    ss_within = 2 * 0.02**2 + 2 * 0.01**2 + 2 * 0.02**2
    f = (ss_between / 2) / (ss_within / 6)
    res = stats.anova(TABLE)
    assert res["statistic"] == pytest.approx(f, rel=1e-9)
    assert res["p"] < 0.001


def test_kruskal_by_hand():
    # ranks: rnn 1,2,3; engram 4,5,6; lstm 7,8,9 -> H = 12/(N(N+1)) sum R^2/n - 3(N+1)
    h = 12 / (9 * 10) * ((6**2 + 15**2 + 24**2) / 3) - 3 * 10
    res = stats.kruskal(TABLE)
    assert res["statistic"] == pytest.approx(h, rel=1e-9)
    # the exact p of two models of three seeds: 20 assignments of the six values, of which
    # the two that separate the groups completely reach H = 27/7 (the chi-square approximation
    # gives 0.0495)
    two = {"engram": [0.90, 0.92, 0.94], "lstm": [0.95, 0.96, 0.97]}
    res = stats.kruskal(two)
    assert res["statistic"] == pytest.approx(27 / 7) and res["p"] == pytest.approx(2 / 20)
    assert stats.kruskal(two) == res  # seeded where it draws: the same p every time


def test_tukey_pairs_and_significance():
    res = stats.tukey(TABLE)
    pairs = {(p["a"], p["b"]): p for p in res["pairs"]}
    assert pairs[("engram", "lstm")]["diff"] == pytest.approx(0.92 - 0.96)
    assert pairs[("engram", "rnn")]["significant"]
    assert pairs[("lstm", "rnn")]["p"] < pairs[("engram", "lstm")]["p"]
    low, high = pairs[("engram", "rnn")]["ci"]  # significant: the interval excludes 0
    assert low < pairs[("engram", "rnn")]["diff"] < high and (low > 0 or high < 0)


def test_hedges_g_against_a_hand_computed_value():
    # means 2 and 1, both sample stds 1: d = 1, J = 1 - 3 / (4 * 6 - 9) = 0.8
    res = stats.hedges_g([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
    assert res["g"] == pytest.approx(0.8)
    se = (6 / 9 + 0.64 / 12) ** 0.5
    assert res["g_ci"] == pytest.approx([0.8 - 1.96 * se, 0.8 + 1.96 * se])
    assert stats.hedges_g([1.0, 1.0], [2.0, 2.0])["g"] is None


def test_tests_say_why_they_cannot_run():
    assert "two seeds" in stats.anova({"a": [1.0], "b": [2.0, 3.0]})["skipped"]
    assert "two models" in stats.tukey({"a": [1.0, 2.0]})["skipped"]


def test_run_fields_come_from_every_epoch_not_just_the_best():
    from enn.train.callbacks import summarize_epochs

    rows = [
        {"epoch": "1", "val_loss": "0.9", "epoch_seconds": "2.0", "steps": "10"},
        {"epoch": "2", "val_loss": "0.5", "epoch_seconds": "2.5", "steps": "10"},
        {"epoch": "3", "val_loss": "0.7", "epoch_seconds": "1.5", "steps": "10"},
    ]
    s = summarize_epochs(rows)
    assert s["best_epoch"] == 2 and s["epochs_run"] == 3 and s["val_loss"] == 0.5
    assert s["train_seconds"] == 6.0 and s["seconds_per_epoch"] == 2.0
    assert s["seconds_per_step"] == 0.2


def test_welch_against_a_hand_computed_interval():
    a, b = [1.0, 2.0, 3.0], [2.0, 3.0, 5.0]
    res = stats.welch(a, b)
    # var 1 and 7/3 over n 3: se = sqrt(10/9); Welch-Satterthwaite df = 3.448
    se = math.sqrt(1 / 3 + 7 / 9)
    df = se**4 / ((1 / 3) ** 2 / 2 + (7 / 9) ** 2 / 2)
    half = scipy_stats.t.ppf(0.975, df) * se
    assert res["diff"] == pytest.approx(-4 / 3)
    assert res["ci"] == pytest.approx([-4 / 3 - half, -4 / 3 + half])
    assert res["p"] == pytest.approx(2 * scipy_stats.t.sf(4 / 3 / se, df))
    assert res["g"] == pytest.approx(stats.hedges_g(a, b)["g"])


def test_tests_leave_out_the_models_with_one_seed(tmp_path):
    scores = {"engram": [0.90, 0.92, 0.91], "lstm": [0.80, 0.81, 0.79], "gru": [0.85]}
    for model, values in scores.items():
        for seed, acc in enumerate(values):
            run = tmp_path / f"{model}-seed{seed}"
            run.mkdir()
            (run / "metrics.json").write_text(json.dumps({
                "task": "digits", "model": model, "seed": seed, "preset": "default",
                "test_acc": acc, "test_loss": 1 - acc}))
    summary = summarize(tmp_path)
    tests = summary["tests"]
    assert tests["left_out"] == ["gru"]
    assert tests["anova"]["p"] < 0.05
    assert [(p["a"], p["b"]) for p in tests["tukey"]["pairs"]] == [("engram", "lstm")]
    assert report.tests_in_words(summary)[0].endswith("left out (one seed): gru.")


def test_one_value_has_no_spread_and_no_interval():
    assert stats.describe([0.9]) == {"mean": 0.9, "std": None, "n": 1, "ci95": None}


def test_no_spread_within_the_models_is_no_test():
    groups = {"a": [1.0, 1.0], "b": [0.99, 0.99]}  # F and t would be infinite
    for test in (stats.anova, stats.kruskal, stats.tukey):
        assert test(groups)["skipped"] == "no spread within any model"
    welch = stats.welch([1.0, 1.0], [0.99, 0.99])
    assert welch["diff"] == pytest.approx(0.01) and welch["p"] is None and welch["ci"] is None


def write_run(folder, model, seed, acc, loss):
    run = folder / f"{model}-seed{seed}"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({
        "task": "digits", "model": model, "seed": seed, "preset": "default", "params": 10,
        "test_acc": acc, "test_loss": loss, "seconds_per_epoch": 1.0, "epochs_run": 3}))
    return run


def test_a_run_without_a_finite_score_is_named_and_not_counted(tmp_path):
    from enn.train.compare import write_summary

    for seed, acc in enumerate([0.90, 0.92, 0.91]):
        write_run(tmp_path, "engram", seed, acc, 1 - acc)
    for seed, acc in enumerate([0.80, 0.81]):
        write_run(tmp_path, "lstm", seed, acc, 1 - acc)
    write_run(tmp_path, "lstm", 2, float("nan"), float("nan"))  # diverged
    write_run(tmp_path, "gru", 0, 0.85, 0.15)  # one seed: no spread, no interval
    write_run(tmp_path, "rnn", 0, float("nan"), float("nan"))  # no run to count
    summary = summarize(tmp_path)
    assert summary["tests"]["not_finite"] == ["lstm-seed2", "rnn-seed0"]
    assert summary["tests"]["left_out"] == ["gru"]
    assert summary["models"]["lstm"]["test_acc"]["n"] == 2
    assert summary["tests"]["anova"]["p"] < 0.05  # over the finite runs
    assert "not counted: lstm-seed2" in " ".join(report.tests_in_words(summary))
    runs = [(tmp_path / "engram-seed9", {"model": "engram", "test_acc": float("nan")}),
            (tmp_path / "engram-seed1", {"model": "engram", "test_acc": 0.92})]
    assert report.best_engram_run(summary, runs)[0].name == "engram-seed1"
    write_summary(tmp_path, summary)  # strict JSON: no NaN or Infinity

    def refuse(constant):
        raise ValueError(constant)

    saved = json.loads((tmp_path / "summary.json").read_text(), parse_constant=refuse)
    assert saved["models"]["gru"]["test_acc"] == {"mean": 0.85, "std": None, "n": 1,
                                                  "ci95": None}
    _, rows = report.results_table(summary)
    assert {row[0]: row[2:4] for row in rows}["gru"] == ["0.8500", "n/a"]


def test_a_p_value_is_never_rounded_across_the_verdict_s_alpha():
    assert report._p(0.0495) == "0.0495"  # not "0.05" beside "differ at alpha 0.05"
    assert report._p(0.123) == "0.12" and report._p(0.0504) == "0.05"
    assert report._p(3e-5) == "3.0e-05"
