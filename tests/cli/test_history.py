"""`steer history` and replaying a recorded run with `steer generate --preset`; a killed
`steer chat` comes back with its session."""

from __future__ import annotations

import json

import pytest
from builders import invoke

from steer.app.engine import PlaygroundEngine
from steer.app.session import Session, load_session, record_run, save_session


def recorded_session(engine, prompts) -> Session:
    runs = []
    for prompt in prompts:
        levers, settings = engine.active_interventions(), engine.settings
        for _ in engine.generate(prompt):
            pass
        runs.append(record_run(engine, engine.last, levers, settings, turns_before=0))
    return Session(model=engine.model_name, sae=str(engine.sae_path), runs=runs)


@pytest.mark.parametrize("chat", [True, False])
def test_an_exported_run_replays_to_the_same_steered_text(sae_dir, tiny_model_dir, tmp_path, chat):
    engine = PlaygroundEngine(presets_dir=tmp_path)
    engine.load(str(tiny_model_dir), sae_dir)
    engine.update_settings(max_new_tokens=12, chat=chat)
    engine.add_feature(0, 40.0, "add")
    engine.add_feature(7, 3.0, "clamp")
    engine.toggle(7)  # muted: not part of the run
    session = recorded_session(engine, ["The Golden Gate", "Dogs are"])
    run = session.runs[0]
    assert run.chat is chat and run.levers() == "0=40 add" and run.steered != run.baseline
    path = save_session(tmp_path / "session.json", session)

    result = invoke("history", "export", "--session", path, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "2 runs" in result.output
    markdown = (tmp_path / "out" / "history.md").read_text()
    assert "steer generate --preset runs/run-001.json" in markdown and "0=40 add" in markdown
    exported = json.loads((tmp_path / "out" / "history.json").read_text())
    assert [r["steered"] for r in exported["runs"]] == [r.steered for r in session.runs]

    for i, recorded in enumerate(session.runs, 1):
        preset = tmp_path / "out" / "runs" / f"run-{i:03d}.json"
        result = invoke("generate", "--preset", preset, "--json")
        assert result.exit_code == 0, result.output
        replay = json.loads(result.output)
        assert replay["prompt"] == recorded.prompt
        assert replay["steered"]["text"] == recorded.steered  # greedy: the same tokens
        assert replay["baseline"]["text"] == recorded.baseline

    listed = invoke("history", "list", "--session", path)
    assert "Golden Gate" in listed.output and "0=40 add" in listed.output


def test_history_without_a_session_is_a_one_line_error(tmp_path):
    result = invoke("history", "export", "--session", tmp_path / "none.json", "--out", tmp_path)
    assert result.exit_code == 1 and "no session at" in result.output
    assert "Traceback" not in result.output


def test_load_session_keeps_runs_and_drops_broken_ones(tmp_path):
    path = tmp_path / "s.json"
    good = {"time": "t", "model": "m", "sae": None, "prompt": "p", "chat": False,
            "interventions": [], "settings": {}, "strength_units": "raw",
            "baseline": "b", "steered": None}  # fmt: skip
    path.write_text(json.dumps({"version": 1, "runs": [good, {"time": "t"}, "junk"]}))
    saved, dropped = load_session(path)
    assert len(saved.runs) == 1 and saved.runs[0].baseline == "b"
    assert len(dropped) == 2


# ---------------------------------------------------------------- kill -9, then reopen
class Terminal:
    """`steer chat` in a pseudo-terminal (120×40), its output drained by a thread."""

    def __init__(self, args, env, cwd):
        import fcntl
        import os
        import pty
        import struct
        import subprocess
        import termios
        import threading

        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, start_new_session=True
        )
        os.close(slave)
        self.master, self.output = master, bytearray()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        import os

        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.output += chunk

    def type(self, text: str, then: float = 0.3) -> None:
        import os
        import time

        os.write(self.master, text.encode())
        time.sleep(then)


def wait_for(condition, timeout: float = 120.0, what: str = ""):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def saved_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_a_chat_killed_with_sigkill_reopens_its_session(sae_dir, tiny_model_dir, tmp_path):
    import os
    import signal
    import sys

    session = tmp_path / "session.json"
    env = {**os.environ, "STEER_STATE_DIR": str(tmp_path / "state"), "TERM": "xterm-256color"}
    args = [sys.executable, "-m", "steer", "chat", "--model", str(tiny_model_dir),
            "--sae", str(sae_dir), "--session", str(session)]  # fmt: skip
    first = Terminal(args, env, tmp_path)
    try:
        wait_for(lambda: saved_json(session), what="the first save")
        first.type("a story about bridges")  # the prompt box has the focus
        first.type("\x10", then=1.5)  # ctrl+p: the palette
        first.type("#7", then=2.0)
        first.type("\r", then=1.0)  # "Add feature #7": its slider gets the focus
        first.type("25\r")  # strength 25 (raw units: this SAE has no catalog)
        first.type("\x05")  # ctrl+e: mode add (the panel takes no plain letters)
        want = [{"latent": 7, "strength": 25.0, "mode": "add", "enabled": True}]
        wait_for(
            lambda: (saved_json(session) or {}).get("features") == want,
            what=f"the feature in the saved session: {first.output[-2000:]!r}",
        )
        assert saved_json(session)["prompt"] == "a story about bridges"
    finally:
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(30)
    assert first.proc.returncode == -signal.SIGKILL
    before = session.stat().st_mtime_ns

    second = Terminal(args, env, tmp_path)
    try:
        # The reopened app saves what it restored: had it lost anything, this would differ.
        wait_for(lambda: session.stat().st_mtime_ns != before, what="the reopened app's save")
        data = saved_json(session)
        assert data["features"] == want and data["prompt"] == "a story about bridges"
        wait_for(lambda: b"reopened" in second.output, what="the reopened notice")
        second.type("\x11")  # ctrl+q
        assert second.proc.wait(60) == 0
    finally:
        if second.proc.poll() is None:
            second.proc.kill()
