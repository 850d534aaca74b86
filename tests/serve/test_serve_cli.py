"""`steer serve` through typer's runner: its flags reach the server, bad ones stop it early."""

from __future__ import annotations

import socket

import openai
import pytest
from builders import invoke
from test_serve_api import KEY, PROMPT, ServerThread, generate_cli

from steer.serve.service import StopScanner


@pytest.fixture
def captured(monkeypatch):
    """uvicorn.run replaced by a recorder: the test runs the app the command built."""
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    return calls


def test_serve_wires_its_flags_into_the_server(sae_dir, captured):
    result = invoke(
        "serve", "--sae", sae_dir, "--steer", "0=40:add", "--api-key", KEY, "--port", 8123
    )
    assert result.exit_code == 0, result.output
    assert "default steer: 40 #0:add" in result.stderr  # as the printer writes it
    ((app, options),) = captured
    assert options["host"] == "127.0.0.1" and options["port"] == 8123  # localhost by default
    expected = generate_cli(sae_dir, "--no-chat")
    with ServerThread(app) as url:
        client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
        model = client.models.list().data[0].id
        reply = client.completions.create(model=model, prompt=PROMPT, max_tokens=8)
        assert reply.choices[0].text == expected["steered"]["text"]  # --steer is the default
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="nope", max_retries=0).models.list()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--steer", "0=oops"], "steering expression, column 3: unexpected 'oops'"),
        (["--steer", "64=2"], "feature 64 is out of range"),
        (["--port", "0"], "--port must be in 1..65535"),
        (["--max-tokens", "0"], "--max-tokens must be at least 1"),
    ],
)
def test_serve_refuses_bad_flags_before_listening(sae_dir, captured, flags, message):
    result = invoke("serve", "--sae", sae_dir, *flags)
    assert result.exit_code == 1 and not captured
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_says_when_the_port_is_taken(sae_dir, captured):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("serve", "--sae", sae_dir, "--port", port)
    assert result.exit_code == 1 and not captured
    assert (
        result.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_stop_scanner_holds_back_a_possible_stop_string():
    scanner = StopScanner(["||", "END"])
    assert scanner.push("ab|") == ("ab", False)  # "|" may start "||"
    assert scanner.push("c") == ("|c", False)
    assert scanner.push("E") == ("", False)
    assert scanner.push("N") == ("", False)
    assert scanner.push("x|") == ("ENx", False)
    assert scanner.push("|tail") == ("", True)
    assert StopScanner([]).push("a||") == ("a||", False)
