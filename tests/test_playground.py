"""The playground's machine side: one trial watched, a tab's machine, the XOR race, the
messages' checks (the web server and the page are tested in test_playground_server.py and
test_playground_browser.py)."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from mark1 import MarkI, make_task
from mark1.machine import load_machine
from mark1.playground import protocol
from mark1.playground.mlp import TinyMLP
from mark1.playground.tab import Curve, HeldOut, Settings, Tab, task_cards
from mark1.playground.trial import cells_at_reading, look, one_trial
from mark1.playground.xor import LEARNERS, XorRace, half_cards
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def ef():
    return task_cards("e-f")


# ---------------------------------------------------------------------- one trial


@pytest.mark.parametrize("preset", ["cds-1960", "ideal", "cds-worn"])
def test_trial_by_trial_the_machine_learns_exactly_as_in_one_pass(ef, preset):
    order = np.random.default_rng(3).permutation(ef.n_train)[:60]
    watched = MarkI(preset=preset, random_state=7)
    for i in order:
        one_trial(watched, ef.X_train[i], int(ef.y_train[i]), classes=np.arange(2))
    whole = MarkI(preset=preset, random_state=7, shuffle=False)
    whole.partial_fit(ef.X_train[order], ef.y_train[order], classes=[0, 1])
    assert np.array_equal(watched.coef_, whole.coef_)
    assert np.array_equal(watched.intercept_, whole.intercept_)
    assert watched.machine_time_s == whole.machine_time_s
    assert watched.motor_steps == whole.motor_steps
    assert np.array_equal(watched.predict(ef.X_test), whole.predict(ef.X_test))


def test_a_trial_shows_the_rosenblatt_rule(ef):
    # no contact noise: the sums the trial shows are the ones the machine answered with
    machine = MarkI(preset="cds-1960", random_state=2, machine={"read_noise": 0.0, "drift_sd": 0.0})
    seen = {True: 0, False: 0}
    for i in range(40):
        before = machine.pots_.travel.copy() if i else None
        steps = machine.motor_steps if i else 0
        trial = one_trial(machine, ef.X_train[i], int(ef.y_train[i]), classes=np.arange(2))
        seen[trial.mistake] += 1
        assert trial.mistake == (trial.answer != trial.label)
        if not trial.mistake:
            assert not trial.motors.any() and trial.motor_steps == 0
            assert np.array_equal(trial.sums_before, trial.sums_after)
            continue
        # the motors of every active A-unit's pot (and the bias pot) on the wrong R-unit ran
        active = np.append(np.flatnonzero(trial.a), machine.plugboard_.n_a)
        (unit,) = np.flatnonzero(trial.motors.any(axis=1))
        assert np.array_equal(np.flatnonzero(trial.motors[unit]), active)
        assert trial.motor_steps == machine.motor_steps - steps == len(active)
        assert not (trial.moved & ~trial.motors).any()  # only turned pots moved
        if before is not None:
            assert np.array_equal(trial.moved, machine.pots_.travel != before)
        # one step toward the right answer: the sum moved toward the label's side
        target = machine.codebook_[trial.label, unit]
        if not np.isnan(trial.sums_before[unit]):
            assert (trial.sums_after[unit] - trial.sums_before[unit]) * target > 0
    assert seen[True] and seen[False]


def test_the_cells_shown_are_what_the_machine_read(ef):
    machine = MarkI(preset="cds-1960", random_state=4)
    one_trial(machine, ef.X_train[0], int(ef.y_train[0]), classes=np.arange(2))
    for i in range(1, 6):
        retina = copy.deepcopy(machine.retina_)  # the same cells, in the same state
        clock = machine.preset_.clock
        expected = retina.present(ef.X_train[i].reshape(1, -1), clock.dwell_s, clock.change_s)[0]
        trial = one_trial(machine, ef.X_train[i], int(ef.y_train[i]))
        assert np.array_equal(trial.s, expected)
        assert np.array_equal(trial.a, machine.plugboard_.respond(expected[None])[0])
        assert np.array_equal(cells_at_reading(machine)[1], expected)
        assert np.array_equal(trial.s, trial.cells > 1)


def test_a_card_shown_too_briefly_carries_the_last_cards_ghost():
    lit, dark = np.ones(400), np.zeros(400)
    ghosts, rising = {}, {}
    for dwell in (0.005, 0.15):
        machine = MarkI(preset="cds-1960", random_state=0,
                        machine={"dwell_s": dwell, "change_s": 0.0})
        rising[dwell] = int(one_trial(machine, lit, 1, classes=np.arange(2)).s.sum())
        for _ in range(60):  # the cells settle on the lit card
            one_trial(machine, lit, 1)
        ghosts[dwell] = int(one_trial(machine, dark, 0).s.sum())
    assert ghosts[0.005] > 300  # 5 ms after the lamp went dark most cells still fire
    assert ghosts[0.15] == 0  # after the 150 ms dwell of the 1960 machine, none
    assert rising[0.005] < 50 < 350 < rising[0.15]  # nor have they lit 5 ms after it came on


def test_a_look_learns_nothing_and_the_clock_runs(ef):
    machine = MarkI(preset="cds-1960", random_state=1, machine={"drift_sd": 0.0})
    one_trial(machine, ef.X_train[0], int(ef.y_train[0]), classes=np.arange(2))
    weights, t, travel = machine.coef_.copy(), machine.machine_time_s, machine.pots_.travel.copy()
    seen = look(machine, ef.X_train[1])
    assert seen.label is None and not seen.motors.any()
    assert np.array_equal(machine.coef_, weights)
    assert np.array_equal(machine.pots_.travel, travel)
    assert machine.machine_time_s == pytest.approx(t + 0.2)  # one card: change and dwell


def test_the_machines_logs_stay_bounded_trial_after_trial(ef):
    tab = Tab(Settings(preset="ideal"), ef)
    tab.step(250)
    assert len(tab.machine.epoch_logs_) == 1 and len(tab.machine.history_["mistakes"]) == 1


# ---------------------------------------------------------------------- a tab's machine


def test_a_pass_shows_every_training_card_once_in_a_new_order(ef):
    tab = Tab(Settings(preset="ideal", seed=5), ef)
    first = tab.pass_order.copy()
    assert sorted(first) == list(range(ef.n_train))
    tab.step(ef.n_train)
    assert tab.passes == 1 and tab.trials == ef.n_train and tab.pass_pos == 0
    assert len(tab.pass_mistakes) == 1 and tab.pass_mistakes[0] == tab.mistakes
    assert sorted(tab.pass_order) == list(range(ef.n_train))
    assert not np.array_equal(tab.pass_order, first)
    assert tab.tested_at == ef.n_train  # tested at the end of the pass


def test_the_tabs_test_accuracy_is_the_machines_score(ef):
    tab = Tab(Settings(), ef)
    tab.step(70)
    names = np.array(ef.classes)  # the machine is taught class names
    assert tab.test() == pytest.approx(tab.machine.score(ef.X_test, names[ef.y_test]))
    assert tab.machine.classes_.tolist() == ["E", "F"]
    assert HeldOut(tab.machine, ef).accuracy(tab.machine) == tab.test_accuracy


def test_same_seed_same_machine_other_seed_another(ef):
    a, b, c = (Tab(Settings(seed=s), ef) for s in (3, 3, 4))
    for tab in (a, b, c):
        tab.step(30)
    assert np.array_equal(a.machine.coef_, b.machine.coef_)
    assert not np.array_equal(a.machine.coef_, c.machine.coef_)


def test_settings_rewire_the_machine_and_bad_ones_are_refused(ef):
    tab = Tab(Settings(), ef)
    tab.step(5)
    tab.configure(stuck_fraction=0.2, n_a=64)
    assert tab.trials == 0 and not tab.wired
    tab.step(1)
    assert tab.machine.pots_.shape == (8, 65)
    assert tab.machine.machine_preset().pots.stuck_fraction == 0.2
    assert tab.parameters()["stuck_fraction"] == 0.2 and tab.parameters()["n_a"] == 64
    with pytest.raises(ValueError, match=r"stuck_fraction must be a number in \[0, 0.5\]"):
        tab.configure(stuck_fraction=0.7)
    with pytest.raises(ValueError, match="n_a must be a whole number"):
        tab.configure(n_a=10.5)
    assert tab.parameters()["stuck_fraction"] == 0.2  # a refused change changes nothing
    tab.configure(preset="ideal")  # a new preset: its own values again
    assert tab.parameters()["stuck_fraction"] == 0.0 and tab.settings.overrides == {}


def test_teach_and_classify_a_drawing(ef):
    tab = Tab(Settings(preset="ideal", rule="ideal"), ef)
    with pytest.raises(ValueError, match="wired at its first trial"):
        tab.look()
    tab.pick(3)
    assert np.array_equal(tab.drawing, ef.X_train[3].ravel()) and tab.card_index == 3
    label = int(ef.y_train[3])
    first = tab.teach(label)  # the first trial wires the machine
    assert tab.class_index(first.label) == label and tab.trials == 1
    for _ in range(4):
        if tab.class_index(tab.teach(1 - label).answer) == 1 - label:
            break
    assert tab.class_index(tab.look().answer) == 1 - label  # it now says what it was told
    with pytest.raises(ValueError, match="label must be a class"):
        tab.teach(2)
    bar = np.zeros((20, 20))
    bar[8:12] = 1.0
    tab.draw(bar.ravel())
    assert tab.card_index is None and tab.look().card.sum() == 80


def test_the_curve_keeps_its_ends_in_bounded_memory():
    curve = Curve()
    for trial in range(1, 100_001):
        curve.add(trial, trial // 3, trial * 0.2, math.nan)
    points = curve.arrays()
    assert len(points["trial"]) < Curve.SIZE
    assert points["trial"][0] == 1 and points["trial"][-1] > 99_000
    assert np.all(np.diff(points["trial"]) > 0)


def test_a_frame_is_json_and_decodes_to_the_machine(ef):
    tab = Tab(Settings(), ef)
    frame = tab.frame()
    assert not frame["wired"] and "pots" not in frame
    tab.step(8)
    frame = json.loads(json.dumps(tab.frame()))
    pots = tab.machine.pots_.read(tab.machine.machine_time_s)
    p = frame["pots"]
    shown = protocol.unlevels(p["values"], p["lo"], p["hi"]).reshape(p["shape"])
    assert np.abs(shown - pots).max() <= (p["hi"] - p["lo"]) / 255 / 2 + 1e-12
    last = frame["last"]
    assert np.array_equal(protocol.unbits(last["a"], last["n_a"]), tab.last.a)
    assert np.array_equal(protocol.unbits(last["s"], 400), tab.last.s)
    assert frame["trial"] == 8 and frame["machine_time_s"] == tab.machine.machine_time_s
    assert frame["mistakes"] == tab.mistakes


def test_the_downloaded_machine_exports_and_quantizes(ef, tmp_path):
    tab = Tab(Settings(), ef)
    with pytest.raises(ValueError, match="wired at its first trial"):
        tab.save_machine(tmp_path / "early.npz")
    tab.step(ef.n_train)
    path = tab.save_machine(tmp_path / "machine.npz")
    machine = load_machine(path)
    assert machine["task"] == "e-f" and machine["preset"] == "cds-1960"
    assert np.array_equal(machine["weights"], tab.machine.coef_)
    done = run_cli("export", "onnx", str(path), "--target", "desktop", "--out",
                   str(tmp_path / "onnx"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "onnx" / "model.onnx").is_file()
    done = run_cli("quantize", str(path), "--out", str(tmp_path / "model.m1w"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "model.m1w").stat().st_size > 0


def test_the_figures_are_png():
    from mark1.playground.figures import FIGURES, machine_time_text

    tab = Tab(Settings(preset="ideal"), task_cards("e-f"))
    for name, draw in FIGURES.items():
        assert draw(tab.figure_data())[:8] == b"\x89PNG\r\n\x1a\n", name  # before wiring too
    tab.step(120)
    for name, draw in FIGURES.items():
        assert draw(tab.figure_data())[:8] == b"\x89PNG\r\n\x1a\n", name
    assert machine_time_text(2 * 3600 + 14 * 60 + 5) == "2 h 14 min"
    assert machine_time_text(200) == "3 min 20 s"
    assert machine_time_text(12.44) == "12.4 s"


# ---------------------------------------------------------------------- XOR


def test_on_xor_one_layer_never_settles_the_others_learn():
    race = XorRace(make_task("xor", seed=0), {"preset": "ideal", "random_state": 1}, 1)
    for _ in range(8):
        race.step()
    assert set(race.mistakes) == set(LEARNERS)
    assert min(race.mistakes["single layer"]) > 20  # dozens of mistakes every pass
    assert race.mistakes["Mark I"][-1] == 0 and race.mistakes["MLP"][-1] == 0
    assert race.accuracy["Mark I"] > 0.95 and race.accuracy["MLP"] > 0.95
    assert race.accuracy["single layer"] < 0.8
    corners = [0, 10, 110, 120]  # (dark, dark), (dark, lit), (lit, dark), (lit, lit)
    assert list(race.maps["MLP"][corners] > 0.5) == [False, True, True, False]


def test_half_cards_light_the_halves():
    cards = half_cards(3).reshape(3, 3, 20, 20)
    assert cards[2, 0, :, :10].min() == 1 and cards[2, 0, :, 10:].max() == 0
    assert cards[1, 1].min() == cards[1, 1].max() == 0.5


def test_the_tiny_mlp_steps_against_the_gradient():
    rng = np.random.default_rng(0)
    mlp = TinyMLP(3, n_hidden=4, learning_rate=0.5, rng=rng)
    x, y = rng.normal(size=(1, 3)), np.array([1])

    def loss() -> float:
        p = float(mlp.probability(x)[0])
        return -math.log(p)

    # the gradient by finite differences equals what a step does (small rate: first order)
    w = mlp.W1.copy()
    eps = 1e-6
    numeric = np.zeros_like(w)
    for idx in np.ndindex(*w.shape):
        mlp.W1[idx] = w[idx] + eps
        up = loss()
        mlp.W1[idx] = w[idx] - eps
        numeric[idx] = (up - loss()) / (2 * eps)
        mlp.W1[idx] = w[idx]
    mlp.learning_rate = 1e-3
    mlp.train_pass(x, y, np.array([0]))
    assert np.allclose((w - mlp.W1) / 1e-3, numeric, rtol=1e-4, atol=1e-8)


# ---------------------------------------------------------------------- messages


GOOD = [
    ({"type": "play"}, "play", {}),
    ({"type": "speed", "value": 20, "id": 1}, "speed", {"value": "20"}),
    ({"type": "speed", "value": "max"}, "speed", {"value": "max"}),
    ({"type": "param", "name": "read_noise", "value": 0.01}, "param",
     {"name": "read_noise", "value": 0.01}),
    ({"type": "card", "index": "random", "id": "x"}, "card", {"index": "random"}),
    ({"type": "teach", "label": 1}, "teach", {"label": 1}),
    ({"type": "xor", "action": "step"}, "xor", {"action": "step"}),
]


@pytest.mark.parametrize("message,kind,args", GOOD)
def test_good_messages_are_read(message, kind, args):
    command = protocol.parse(json.dumps(message))
    assert command.type == kind and command.args == args and command.id == message.get("id")


BAD = [
    ("{not json", "message is not JSON"),
    ("[1, 2]", "a message must be a JSON object; got list"),
    ('{"type": "dance"}', "unknown message type 'dance'; allowed: play"),
    ('{"type": "play", "colour": 1}', "unknown field 'colour' for 'play'; allowed: id"),
    ('{"type": "task"}', "'task' needs the field 'name'"),
    ('{"type": "task", "name": "chess"}', "task: name 'chess' is not allowed; allowed: "),
    ('{"type": "param", "name": "voltage", "value": 1}', "param: name 'voltage' is not allowed"),
    ('{"type": "param", "name": "step", "value": "big"}', "value must be a finite number"),
    ('{"type": "param", "name": "step", "value": NaN}', "value must be a finite number"),
    ('{"type": "seed", "value": -1}', "seed: value must be a whole number in [0, 2147483647]"),
    ('{"type": "seed", "value": true}', "value must be a whole number"),
    ('{"type": "speed", "value": 7}', "speed: value '7' is not allowed; allowed: 1960"),
    ('{"type": "card", "index": -3}', "index must be a card number >= 0"),
    ('{"type": "draw", "cells": [1, 0]}', "cells must be a list of 400 numbers (20 x 20 cells,"
     " row by row); got 2 values"),
    ('{"type": "draw", "cells": "abc"}', "got str"),
    ('{"type": "draw", "cells": [' + ", ".join(["2"] * 400) + "]}", "between 0 and 1"),
    ('{"type": "draw", "cells": [' + ", ".join(['"a"'] * 400) + "]}", "numbers between 0"),
    ('{"type": "play", "id": [1]}', "id must be a number or a string"),
    ('{"type": "play", "id": "' + "x" * 65 + '"}', "id must be a number or a string"),
    ('{"type": "draw", "cells": [' + ", ".join(["0.5"] * 20000) + "]}",
     "bytes is too large (at most 65,536)"),
]


@pytest.mark.parametrize("text,says", BAD)
def test_bad_messages_are_refused_saying_why(text, says):
    with pytest.raises(protocol.BadMessage) as caught:
        protocol.parse(text)
    assert says in str(caught.value)


def test_a_refusal_keeps_the_messages_id():
    with pytest.raises(protocol.BadMessage) as caught:
        protocol.parse('{"type": "teach", "label": "E", "id": 42}')
    assert caught.value.id == 42


def test_arrays_travel_as_levels_and_bits():
    rng = np.random.default_rng(0)
    flags = rng.random(513) < 0.3
    assert np.array_equal(protocol.unbits(protocol.bits(flags), 513), flags)
    values = rng.uniform(-1, 1, 100)
    back = protocol.unlevels(protocol.levels(values, -1.0, 1.0), -1.0, 1.0)
    assert np.abs(back - values).max() <= 1 / 255 + 1e-12


def test_the_page_gets_the_tasks_class_numbers_whatever_the_machines_order():
    task = task_cards("square-diamond")
    shapes = task_cards("square-circle")
    assert list(shapes.classes) == ["square", "circle"]  # the machine sorts: circle, square
    tab = Tab(Settings(), shapes)
    tab.step(3)
    assert tab.machine.classes_.tolist() == ["circle", "square"]
    last = tab.frame()["last"]
    assert last["label"] == shapes.y_train[tab.card_index]
    assert shapes.classes[last["answer"]] == tab.machine.classes_[tab.last.answer]
    assert task.classes == ("square", "diamond")
