"""Motors and the machine clock."""

from __future__ import annotations

import numpy as np
import pytest

from mark1.machine import MarkI
from mark1.motors import ClockSpec, MachineClock, MotorSpec
from mark1.stimuli import make_task


def test_motor_time_is_whole_rounds_of_whole_steps_in_microseconds():
    m = MotorSpec(steps_per_correction=2, step_s=0.1, max_running=64)
    assert m.motor_us(0) == 0
    assert m.motor_us(1) == 200_000
    assert m.motor_us(64) == 200_000
    assert m.motor_us(65) == 400_000
    assert m.motor_us(513) == 9 * 200_000
    counts = np.array([0, 1, 64, 65, 513])  # pot counts of many corrections at once
    np.testing.assert_array_equal(m.motor_us(counts), [m.motor_us(int(c)) for c in counts])


def test_the_clock_counts_presentations_and_motor_work_in_microseconds():
    clock = MachineClock(ClockSpec(dwell_s=0.15, change_s=0.05), MotorSpec(step_s=0.1,
                                                                          max_running=10))
    assert clock.present(3) == 600_000
    assert clock.run_motors(25) == 25
    assert clock.t_us == 600_000 + 3 * 100_000 and clock.motor_us == 300_000
    assert clock.motor_steps == 25 and clock.trials == 3
    assert clock.run_motors(0) == 0 and clock.t_s == pytest.approx(0.9)


def test_a_run_adds_up_dwell_and_motor_time():
    task = make_task("e-f", seed=0, n_train=40, n_test=4)
    m = MarkI(preset="cds-1960", n_a=64, random_state=0, max_iter=3).fit(task.X_train,
                                                                        task.y_train)
    spec = m.preset_
    n_trials = sum(m.history_["trials"])
    moved = np.concatenate([log.motor_steps for log in m.epoch_logs_])
    rounds = np.ceil(moved / spec.motors.max_running)
    expected = n_trials * (spec.clock.dwell_s + spec.clock.change_s) + rounds.sum() * (
        spec.motors.step_s * spec.motors.steps_per_correction)
    assert m.machine_time_s == pytest.approx(expected)
    assert m.motor_steps == moved.sum() > 0
    # every mistake turned the pots of the active A-units (bias line included)
    wrong = np.concatenate([log.wrong for log in m.epoch_logs_])
    assert np.array_equal(moved > 0, wrong)
    times = np.concatenate([log.time_us for log in m.epoch_logs_])
    assert np.all(np.diff(times) > 0) and times[-1] / 1e6 == pytest.approx(m.machine_time_s)


def test_the_ideal_rule_runs_no_motors():
    task = make_task("e-f", seed=0, n_train=20, n_test=4)
    m = MarkI(preset="cds-1960", rule="ideal", n_a=32, random_state=0, max_iter=2)
    m.fit(task.X_train, task.y_train)
    assert m.motor_steps == 0
    assert m.machine_time_s == pytest.approx(sum(m.history_["trials"]) * 0.2)


@pytest.mark.parametrize("kw, message", [({"steps_per_correction": 0}, "steps_per_correction"),
                                         ({"step_s": -1.0}, "step_s"),
                                         ({"max_running": 0}, "max_running")])
def test_bad_motor_parameters_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        MotorSpec(**kw)
    with pytest.raises(ValueError, match="dwell_s"):
        ClockSpec(dwell_s=float("inf"))
