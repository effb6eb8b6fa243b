"""The playground's web server: sessions, every control, downloads, bad messages, limits, the
worker processes, and ``mark1 playground`` itself.

Most tests use Starlette's test client on the application with the machines in its own loop;
the socket limits and the command run a real server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

pytest.importorskip("starlette")  # the playground extra (in the dev extra: CI has it)
from starlette.testclient import TestClient  # noqa: E402

from mark1.machine import load_machine  # noqa: E402
from mark1.playground import protocol  # noqa: E402
from mark1.playground.server import MESSAGES_PER_S, create_app  # noqa: E402
from mark1.playground.tab import task_cards  # noqa: E402
from tests.conftest import ROOT, run_cli  # noqa: E402
from tests.playground_helpers import answer, live_server, until  # noqa: E402


@pytest.fixture
def client():
    with TestClient(create_app(workers=0)) as c:
        yield c


class Tab:
    """A test's browser tab: a WebSocket with numbered commands."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.welcome = ws.receive_json()
        self.first = until(ws.receive_json, lambda m: m["type"] == "frame")
        self.n = 0

    def send(self, kind: str, **fields) -> int:
        self.n += 1
        self.ws.send_json({"type": kind, "id": self.n, **fields})
        return self.n

    def do(self, kind: str, answer_kind: str = "frame", **fields) -> dict:
        return answer(self.ws.receive_json, self.send(kind, **fields), answer_kind)

    def frame(self, wanted) -> dict:
        return until(self.ws.receive_json, lambda m: m["type"] == "frame" and wanted(m))


def status(client) -> dict:
    return client.get("/status").json()


def test_a_tab_gets_its_own_machine_and_closing_it_frees_it(client):
    with client.websocket_connect("/ws") as ws:
        tab = Tab(ws)
        assert tab.welcome["type"] == "welcome" and len(tab.welcome["tab"]) >= 16
        assert set(tab.welcome["sliders"]) == set(protocol.SLIDERS)
        assert tab.welcome["speeds"] == list(protocol.SPEEDS)
        assert tab.first["wired"] is False and tab.first["trial"] == 0
        assert tab.first["task"] == "e-f" and tab.first["classes"] == ["E", "F"]
        assert status(client)["tabs"] == 1 and status(client)["machines"] == 1
        tab.do("step")
        token = tab.welcome["tab"]
        assert client.get(f"/tab/{token}/machine.npz").status_code == 200
    for _ in range(200):  # the server hears of the close
        if status(client)["machines"] == 0:
            break
        time.sleep(0.01)
    assert status(client) == {"tabs": 0, "max_tabs": 64, "machines": 0, "workers": 0}
    gone = client.get(f"/tab/{token}/machine.npz")
    assert gone.status_code == 404 and "no such tab" in gone.json()["error"]


def test_the_run_controls(client):
    with client.websocket_connect("/ws") as ws:
        tab = Tab(ws)
        one = tab.do("step")
        assert one["trial"] == 1 and one["wired"] and "last" in one and "pots" in one
        assert one["machine_time_s"] > 0 and one["pots"]["shape"] == [8, 513]
        assert tab.do("speed", value="max")["speed"] == "max"
        assert tab.do("play")["playing"] is True
        running = tab.frame(lambda m: m["trial"] > 60)
        assert running["mistakes"] > 0
        assert running["pass"] * running["n_train"] + running["pass_pos"] == running["trial"]
        paused = tab.do("pause")
        assert paused["playing"] is False
        later = tab.do("test")  # (any command answers with a frame)
        assert later["trial"] == paused["trial"] and later["test_accuracy"] is not None
        left = later["n_train"] - later["pass_pos"]
        tab.do("pass")
        done = tab.frame(lambda m: m["pass_pos"] == 0 and m["trial"] > later["trial"])
        assert done["trial"] == later["trial"] + left and done["pass"] == later["pass"] + 1
        assert len(done["pass_mistakes"]) == done["pass"]
        tab.do("speed", value=20)
        tab.do("play")
        t0 = time.monotonic()
        start = tab.frame(lambda m: True)["trial"]
        tab.frame(lambda m: m["trial"] >= start + 10)
        assert time.monotonic() - t0 > 0.3  # 20 trials a second, not as fast as it goes
        reset = tab.do("reset")
        assert reset["trial"] == 0 and not reset["wired"] and reset["playing"] is False


def test_the_machine_controls(client):
    with client.websocket_connect("/ws") as ws:
        tab = Tab(ws)
        tab.do("step")
        changed = tab.do("param", name="read_noise", value=0.02)
        assert changed["settings"]["parameters"]["read_noise"] == 0.02
        assert changed["trial"] == 0 and not changed["wired"]  # a new machine
        bad = tab.do("param", "error", name="read_noise", value=5)
        assert "read_noise must be a number in [0, 0.1]" in bad["message"]
        assert tab.do("preset", name="ideal")["settings"]["preset"] == "ideal"
        assert tab.do("rule", name="forced-response")["settings"]["rule"] == "forced-response"
        assert tab.do("seed", value=9)["settings"]["seed"] == 9
        n = tab.send("task", name="left-right")
        assert answer(ws.receive_json, n, "busy")["what"] == "making the cards of left-right"
        switched = answer(ws.receive_json, n, "frame")
        assert switched["task"] == "left-right" and switched["classes"] == ["left", "right"]
        assert switched["settings"]["rule"] == "forced-response"  # the rest stays
        one = tab.do("step")
        assert one["last"]["motor_steps"] > 0  # the forced response turns pots every trial
        assert one["settings"]["parameters"]["n_a"] == 512


def test_the_card_and_teaching_controls(client):
    with client.websocket_connect("/ws") as ws:
        tab = Tab(ws)
        cards = task_cards("e-f")
        picked = tab.do("card", index=5)
        assert picked["card_index"] == 5
        assert np.allclose(protocol.unlevels(picked["drawing"], 0, 1), cards.X_train[5].ravel(),
                           atol=1 / 255)
        assert tab.do("card", index="next")["card_index"] == 6
        assert 0 <= tab.do("card", index="random")["card_index"] < cards.n_train
        assert "card: index must be in [0, 100)" in tab.do("card", "error", index=100)["message"]
        refused = tab.do("look", "error")
        assert "wired at its first trial" in refused["message"]
        bar = [1.0 if 8 <= k // 20 < 12 else 0.0 for k in range(400)]
        drawn = tab.do("draw", cells=bar)
        assert drawn["card_index"] is None
        taught = tab.do("teach", label=1)
        assert taught["last"]["learned"] and taught["last"]["label"] == 1 and taught["trial"] == 1
        looked = tab.do("look")
        assert looked["last"]["learned"] is False and looked["trial"] == 1
        assert looked["last"]["answer"] in (0, 1)
        assert "label must be a class" in tab.do("teach", "error", label=7)["message"]


def test_the_xor_race(client):
    with client.websocket_connect("/ws") as ws:
        tab = Tab(ws)
        n = tab.send("xor", action="step")
        assert answer(ws.receive_json, n, "busy")["what"] == "a pass of the XOR race"
        race = until(ws.receive_json, lambda m: m["type"] == "xor")
        assert race["passes"] == 1 and set(race["learners"]) == {"single layer", "Mark I", "MLP"}
        for learner in race["learners"].values():
            assert len(protocol.unlevels(learner["map"], 0, 1)) == race["map_size"] ** 2
        tab.send("xor", action="play")
        until(ws.receive_json, lambda m: m["type"] == "xor" and m["passes"] >= 3)
        tab.do("xor", "xor", action="pause")
        reset = tab.do("xor", "xor", action="reset")
        assert reset["passes"] == 0 and reset["learners"] == {}


def test_downloads(client, tmp_path):
    with client.websocket_connect("/ws") as ws:
        tab = Tab(ws)
        token = tab.welcome["tab"]
        early = client.get(f"/tab/{token}/machine.npz")
        assert early.status_code == 409 and "wired at its first trial" in early.json()["error"]
        tab.do("speed", value="max")
        tab.do("play")
        tab.frame(lambda m: m["trial"] >= 30)
        paused = tab.do("pause")
        got = client.get(f"/tab/{token}/machine.npz")
        assert got.status_code == 200
        assert got.headers["content-disposition"] == 'attachment; filename="machine.npz"'
        machine = client.app.state.machines.runners[token].tab.machine
        saved = machine.save(tmp_path / "saved.npz", task="e-f")
        assert got.content == saved.read_bytes()  # the tab's machine, as MarkI.save writes it
        (tmp_path / "got.npz").write_bytes(got.content)
        arrays = load_machine(tmp_path / "got.npz")
        assert arrays["task"] == "e-f" and np.array_equal(arrays["weights"], machine.coef_)
        for name in ("curves", "pots"):
            png = client.get(f"/tab/{token}/{name}.png")
            assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert client.get(f"/tab/{token}/map.png").status_code == 404
        assert client.get("/tab/nobody/machine.npz").status_code == 404
        assert paused["trial"] >= 30


BAD = [
    ("{oops", None, "message is not JSON"),
    ('{"type": "launch", "id": 1}', 1, "unknown message type 'launch'"),
    ('{"type": "param", "name": "voltage", "value": 3, "id": 2}', 2, "name 'voltage' is not"),
    ('{"type": "draw", "cells": [1], "id": 3}', 3, "cells must be a list of 400 numbers"),
    ('{"type": "draw", "id": 4, "cells": [' + ",".join(["1"] * 40000) + "]}", None,
     "bytes is too large"),
    ('{"type": "seed", "value": 1e300, "id": 5}', 5, "value must be a whole number"),
    ('{"type": "step", "id": 6, "extra": true}', 6, "unknown field 'extra' for 'step'"),
]


def test_bad_messages_are_answered_and_the_tab_goes_on(client):
    with client.websocket_connect("/ws") as ws:
        tab = Tab(ws)
        for text, tag, says in BAD:
            ws.send_text(text)
            error = until(ws.receive_json, lambda m: m["type"] == "error")
            assert says in error["message"], text[:60]
            assert error["re"] == ([] if tag is None else [tag])
        ws.send_bytes(b"\x00\x01")
        error = until(ws.receive_json, lambda m: m["type"] == "error")
        assert "binary messages are not understood" in error["message"]
        assert tab.do("step")["trial"] == 1


def test_a_flood_is_dropped_with_a_message_and_other_tabs_go_on(client):
    with client.websocket_connect("/ws") as ws, client.websocket_connect("/ws") as other:
        flood, calm = Tab(ws), Tab(other)
        for k in range(3000):
            ws.send_text(json.dumps({"type": "speed", "value": "20", "id": k}))
        told = until(ws.receive_json, lambda m: m["type"] == "error")
        assert told["message"].startswith("too many messages: ")
        assert f"(at most {MESSAGES_PER_S:.0f} a second)" in told["message"]
        assert calm.do("step")["trial"] == 1
        time.sleep(2.5)  # the flood is over: the flooding tab's messages are read again
        assert flood.do("step")["trial"] == 1


def test_two_tabs_do_not_see_each_others_machine(client):
    with client.websocket_connect("/ws") as a_ws, client.websocket_connect("/ws") as b_ws:
        a, b = Tab(a_ws), Tab(b_ws)
        assert a.welcome["tab"] != b.welcome["tab"]
        for _ in range(5):
            last = a.do("step")
        assert last["trial"] == 5
        other = b.do("test")
        assert other["trial"] == 0 and not other["wired"]
        b.do("step")
        runners = client.app.state.machines.runners
        ma, mb = runners[a.welcome["tab"]].tab.machine, runners[b.welcome["tab"]].tab.machine
        assert ma is not mb and ma.pots_ is not mb.pots_
        assert ma.motor_steps != mb.motor_steps or ma.machine_time_s != mb.machine_time_s


def test_the_server_holds_at_most_max_tabs():
    with TestClient(create_app(max_tabs=1)) as client:
        with client.websocket_connect("/ws") as ws:
            Tab(ws)
            with client.websocket_connect("/ws") as refused:
                message = refused.receive_json()
                assert message["type"] == "error" and "holds 1 tabs at once" in message["message"]


def test_machines_in_a_worker_process_and_a_worker_that_dies():
    with TestClient(create_app(workers=1)) as client:
        machines = client.app.state.machines
        with client.websocket_connect("/ws") as ws:
            tab = Tab(ws)
            assert tab.do("step")["trial"] == 1
            got = client.get(f"/tab/{tab.welcome['tab']}/machine.npz")
            assert got.status_code == 200 and got.content[:2] == b"PK"
            assert client.get(f"/tab/{tab.welcome['tab']}/pots.png").status_code == 200
            worker = machines.workers[0].process
            os.kill(worker.pid, signal.SIGKILL)
            told = until(ws.receive_json, lambda m: m["type"] == "error")
            assert "the worker process holding this machine stopped" in told["message"]
        with client.websocket_connect("/ws") as ws:  # a new worker takes new tabs
            assert Tab(ws).do("step")["trial"] == 1
        alive = [w.process for w in machines.workers]
        assert worker not in alive and all(p.is_alive() for p in alive)
    assert not any(p.is_alive() for p in alive)  # stopped with the server


# ---------------------------------------------------------------------- a real server


def test_socket_limits_on_a_real_server():
    websockets = pytest.importorskip("websockets")

    async def go(address: str) -> None:
        url = f"ws://{address}/ws"
        async with websockets.connect(url, max_size=None) as big, \
                websockets.connect(url, max_size=None) as calm:
            for ws in (big, calm):
                await ws.recv()
            await big.send('{"type": "draw", "cells": "' + "x" * 200_000 + '"}')
            while True:  # under the socket's limit: an error message
                message = json.loads(await big.recv())
                if message["type"] == "error":
                    break
            assert "bytes is too large" in message["message"]
            await big.send("x" * (2 << 20))  # over it: this socket closes, 1009
            with pytest.raises(websockets.ConnectionClosed) as closed:
                for _ in range(1000):
                    await big.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            await calm.send(json.dumps({"type": "step", "id": 1}))
            while True:  # the other tab goes on
                message = json.loads(await calm.recv())
                if 1 in message.get("re", []):
                    break
            assert message["trial"] == 1

    with live_server(workers=0) as address:
        asyncio.run(asyncio.wait_for(go(address), 60))
        with urllib.request.urlopen(f"http://{address}/status", timeout=10) as response:
            assert json.loads(response.read())["tabs"] == 0


def test_the_page_needs_nothing_from_elsewhere():
    static = ROOT / "mark1" / "playground" / "static"
    page = (static / "index.html").read_text()
    for name in ("playground.js", "playground.css"):
        assert f"/static/{name}" in page and (static / name).is_file()
    for path in static.iterdir():
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path


# ---------------------------------------------------------------------- the command


def test_the_command_serves_the_page_until_stopped(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), BROWSER="true")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mark1.cli", "playground", "--port", "0", "--workers", "1"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "mark1 playground: serving http://127.0.0.1:" in line, line
        url = line.split("serving ")[1].split()[0]
        with urllib.request.urlopen(url, timeout=30) as response:
            assert b"Mark I Perceptron playground" in response.read()
        with urllib.request.urlopen(url + "static/playground.js", timeout=30) as response:
            assert b"new WebSocket" in response.read()
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(30) == 130  # the CLI's status for an interrupted command
    assert proc.stderr.read() == "mark1: interrupted\n"
    assert not list(tmp_path.iterdir())  # it writes nothing


def test_the_command_without_its_server_names_the_extra():
    code = ("import sys; sys.modules['uvicorn'] = None\n"
            "from mark1.cli import main\n"
            "sys.exit(main(['playground', '--no-browser']))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == ("mark1 playground: error: the playground's web server needs "
                           "uvicorn, not installed: pip install 'mark1-kit[playground]'\n")


def test_the_command_refuses_a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = run_cli("playground", "--no-browser", "--port", str(port), timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith(f"mark1 playground: error: cannot listen on 127.0.0.1:{port} (")
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("args,says", [
    (["--port", "70000"], "argument --port: 70000 is out of range (allowed: whole numbers 1 to "
                          "65535, or 0 (any free port)) (see --help)"),
    (["--max-tabs", "0"], "argument --max-tabs: 0 is out of range (allowed: whole numbers 1 to "
                          "10000 tabs) (see --help)"),
    (["--workers", "-1"], "argument --workers: -1 is out of range (allowed: whole numbers 0 to "
                          "64 processes) (see --help)"),
])
def test_the_command_refuses_bad_options(args, says):
    done = run_cli("playground", "--no-browser", *args, timeout=120)
    assert done.returncode == 2 and done.stderr == f"mark1 playground: error: {says}\n"
