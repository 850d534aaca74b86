"""`steer generate` prints tokens as they are generated (the table grows on a terminal);
--json and a pipe get one finished document."""

from __future__ import annotations

import json
import sys

import pytest
from builders import invoke

import steer.steering.generate as generation

ARGS = ["-p", "The Golden Gate", "-f", "0=40:add", "--max-tokens", 6]


@pytest.fixture
def steps(monkeypatch):
    """generate_rows wrapped: before each step is handed over, what stdout holds so far."""
    seen = []
    real = generation.generate_rows

    def watched(*args, **kwargs):
        for events in real(*args, **kwargs):
            sys.stdout.flush()
            seen.append(sys.stdout.buffer.getvalue().decode(errors="replace"))
            yield events

    monkeypatch.setattr(generation, "generate_rows", watched)
    return seen


def test_generate_streams_tokens_to_a_terminal(sae_dir, steps, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: stdout is a terminal
    monkeypatch.setenv("COLUMNS", "100")
    result = invoke("generate", "--sae", sae_dir, *ARGS)
    assert result.exit_code == 0, result.output
    assert len(steps) == 6
    # when step k is generated, exactly the k tokens before it are on the screen
    for k, before in enumerate(steps):
        shown = "Bridge" + " Bridge" * (k - 1)
        assert (k == 0 or shown in before) and shown + " Bridge" not in before, (k, before)
    assert "Bridge" + " Bridge" * 5 in result.stdout


def test_generate_json_and_pipes_get_the_finished_text_once(sae_dir, steps):
    result = invoke("generate", "--sae", sae_dir, *ARGS, "--json")
    assert all(s == "" for s in steps)  # nothing printed while generating
    out = json.loads(result.stdout)  # one document
    assert out["steered"]["text"] == " Bridge" * 6 and out["steered"]["stopped"] == "length"
    steps.clear()
    piped = invoke("generate", "--sae", sae_dir, *ARGS)  # the runner's stdout is no terminal
    assert all("Bridge" not in s for s in steps)
    assert piped.stdout.count("Bridge") == 6 and "\x1b" not in piped.stdout
