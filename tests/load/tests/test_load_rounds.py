from __future__ import annotations

import pytest
from loom_load.report import figures, round_figures
from loom_load.rounds import median_ratios


def test_each_peer_gets_the_median_of_the_rounds_ratios() -> None:
    rounds = [
        {"loom": 1000.0, "celery": 500.0, "taskiq": 1000.0},
        {"loom": 900.0, "celery": 600.0, "taskiq": 1200.0},
        {"loom": 1100.0, "celery": 500.0, "taskiq": 1000.0},
    ]
    out = median_ratios(rounds)
    assert out["celery"] == {"ratios": [2.0, 1.5, 2.2], "median": 2.0}
    assert out["taskiq"] == {"ratios": [1.0, 0.75, 1.1], "median": 1.0}


def test_a_round_where_a_loop_finished_nothing_counts_for_nothing() -> None:
    rounds = [
        {"loom": 1000.0, "celery": None, "taskiq": 800.0},
        {"loom": None, "celery": 500.0, "taskiq": 800.0},
    ]
    out = median_ratios(rounds)
    assert out["celery"] == {"ratios": [], "median": None}
    assert out["taskiq"] == {"ratios": [1.25], "median": 1.25}


def test_round_figures_carry_the_targets_and_the_rounds_in_the_note() -> None:
    rounds = [
        {"loom": 1000.0, "celery": 500.0, "taskiq": 1250.0},
        {"loom": 1000.0, "celery": 800.0, "taskiq": 800.0},
    ]
    figs = {f.key: f for f in round_figures({"rounds": rounds, "median_ratio": median_ratios(rounds)})}
    assert figs["ratio_rounds_celery"].value == pytest.approx(1.625)
    assert figs["ratio_rounds_celery"].ok is True and figs["ratio_rounds_celery"].target == "≥ 1.5×"
    assert (
        figs["ratio_rounds_taskiq"].value == pytest.approx(1.025) and figs["ratio_rounds_taskiq"].ok is True
    )
    assert figs["ratio_rounds_taskiq"].note == "rounds: 0.80, 1.25"


def test_a_failed_step_is_reported_not_judged() -> None:
    figs = {f.key: f for f in round_figures({"na": "paired rounds failed: TimeoutError: worker"})}
    assert figs["ratio_rounds_taskiq"].value is None and figs["ratio_rounds_taskiq"].ok is None
    assert "TimeoutError" in figs["ratio_rounds_taskiq"].note


def test_a_run_without_the_step_has_no_round_figures() -> None:
    keys = {f.key for f in figures({"phases": []})}
    assert not {"ratio_rounds_celery", "ratio_rounds_taskiq"} & keys


def test_a_loop_that_lost_tasks_is_named_in_the_note() -> None:
    rounds = [{"loom": 1000.0, "celery": 500.0, "taskiq": 1000.0}]
    section = {
        "rounds": rounds,
        "median_ratio": median_ratios(rounds),
        "incomplete": [{"round": 0, "system": "taskiq", "completed": 1990, "total": 2000}],
    }
    figs = {f.key: f for f in round_figures(section)}
    assert "1 loop(s) did not complete every task" in figs["ratio_rounds_taskiq"].note
