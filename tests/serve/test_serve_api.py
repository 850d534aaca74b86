"""`steer serve` end to end: a real server on a free port, talked to with the `openai` client.

The server runs the tiny Llama and the planted SAE (conftest's sae_dir: latent 0 fires on
" Bridge") in a background thread (uvicorn.Server), as `steer serve` would.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch
import uvicorn
from builders import invoke

from steer.serve.api import create_app
from steer.serve.service import Piece, SteeringService
from steer.steering import open_sae
from steer.steering.vectors import SteeringVector, save_vector

PROMPT = "The Golden Gate"
STEER = "40 #0:add"  # the planted " Bridge" latent, raw units (the SAE has no catalog)
KEY = "sk-test-token"


class ServerThread:
    """A uvicorn server in a daemon thread, on a port the OS picked."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}/v1"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="module")
def service(sae_dir):
    lm, sae = open_sae(sae_dir)  # what steer serve and steer generate load
    # a saved vector beside the SAE: the planted latent's direction, 40 units of it
    direction = sae.decoder_directions(torch.tensor([0]))[0].detach() * 40  # (d,)
    save_vector(sae_dir, SteeringVector("bridge", direction, hookpoint=sae.cfg.hookpoint))
    svc = SteeringService(lm, sae, sae_dir=sae_dir, max_tokens=8)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def url(service):
    with ServerThread(create_app(service, api_key=KEY)) as base:
        yield base


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=30)


def generate_cli(sae_dir, *flags, steer=STEER) -> dict:
    """`steer generate --steer EXPR --json` for PROMPT, greedy, 8 tokens: both rows."""
    args = ["generate", "--sae", sae_dir, "-p", PROMPT, "-n", 8, "--steer", steer, *flags]
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_models_lists_the_served_model(client, service):
    (card,) = client.models.list().data
    assert card.id == service.model_id


def test_chat_equals_steer_generate_steered_and_baseline(client, service, sae_dir):
    cli = generate_cli(sae_dir)
    assert cli["steered"]["text"] != cli["baseline"]["text"]  # the lever does something
    messages = [{"role": "user", "content": PROMPT}]
    ask = dict(model=service.model_id, messages=messages, temperature=0, max_tokens=8)
    steered = client.chat.completions.create(**ask, extra_body={"steer": STEER})
    assert steered.choices[0].message.content == cli["steered"]["text"]
    assert steered.choices[0].finish_reason == "length"
    assert steered.usage.completion_tokens == 8
    assert steered.model_extra["steer"] == STEER
    for baseline_request in ({"steer": ""}, {"steer": None}):
        baseline = client.chat.completions.create(**ask, extra_body=baseline_request)
        assert baseline.choices[0].message.content == cli["baseline"]["text"]
        assert baseline.model_extra["steer"] == ""
    # no "steer" field: the server's default (here the baseline)
    default = client.chat.completions.create(**ask)
    assert default.choices[0].message.content == cli["baseline"]["text"]


def test_where_a_lever_applies_follows_the_expression(client, service, sae_dir):
    messages = [{"role": "user", "content": PROMPT}]
    for where in ("prompt", "generated"):  # the tiny model copies: both read " Bridge"s
        cli = generate_cli(sae_dir, steer=f"{STEER} @{where}")
        reply = client.chat.completions.create(
            model=service.model_id,
            messages=messages,
            max_tokens=8,
            extra_body={"steer": f"{STEER} @{where}"},
        )
        assert reply.choices[0].message.content == cli["steered"]["text"]


def test_saved_vectors_steer_as_in_steer_generate(client, service, sae_dir):
    cli = generate_cli(sae_dir, steer="1 v:bridge")
    assert "Bridge" in cli["steered"]["text"] and "Bridge" not in cli["baseline"]["text"]
    reply = client.chat.completions.create(
        model=service.model_id,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=8,
        extra_body={"steer": "1 v:bridge"},
    )
    assert reply.choices[0].message.content == cli["steered"]["text"]
    assert reply.model_extra["steer"] == "1 v:bridge"


def test_completions_equal_steer_generate_without_the_template(client, service, sae_dir):
    cli = generate_cli(sae_dir, "--no-chat")
    done = client.completions.create(
        model=service.model_id, prompt=PROMPT, max_tokens=8, extra_body={"steer": STEER}
    )
    assert done.choices[0].text == cli["steered"]["text"]
    assert done.object == "text_completion"


def test_streams_give_the_same_text_in_pieces(client, service, sae_dir):
    cli = generate_cli(sae_dir)
    stream = client.chat.completions.create(
        model=service.model_id,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"steer": STEER},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(texts) == cli["steered"]["text"]
    assert sum(1 for t in texts if t) > 1  # streamed, not one piece
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 8

    plain = generate_cli(sae_dir, "--no-chat")
    pieces = client.completions.create(
        model=service.model_id,
        prompt=PROMPT,
        max_tokens=8,
        stream=True,
        extra_body={"steer": STEER},
    )
    assert "".join(c.choices[0].text for c in pieces) == plain["steered"]["text"]


def test_stop_strings_cut_the_reply(client, service, sae_dir):
    full = generate_cli(sae_dir)["steered"]["text"]
    stop = full[3:5]  # a string inside the reply: the reply ends before its first match
    expected = full[: full.index(stop)]
    ask = dict(
        model=service.model_id,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=8,
        stop=[stop],
        extra_body={"steer": STEER},
    )
    reply = client.chat.completions.create(**ask)
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(**ask, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == expected


def test_sampling_follows_the_seed(client, service):
    ask = dict(
        model=service.model_id,
        prompt=PROMPT,
        max_tokens=8,
        temperature=1.5,
        top_p=0.95,
        extra_body={"steer": STEER},
    )
    texts = [client.completions.create(**ask, seed=s).choices[0].text for s in (1, 1, 2, 3, 4)]
    assert texts[0] == texts[1]
    assert len(set(texts)) > 1  # other seeds, other samples


def test_two_concurrent_requests_both_succeed(client, service, sae_dir):
    cli = generate_cli(sae_dir)
    ask = dict(model=service.model_id, messages=[{"role": "user", "content": PROMPT}])

    def steered(_):
        return client.chat.completions.create(**ask, max_tokens=8, extra_body={"steer": STEER})

    def streamed(_):
        chunks = client.chat.completions.create(**ask, max_tokens=8, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks)

    with ThreadPoolExecutor(4) as pool:
        a = [pool.submit(steered, i) for i in range(2)]
        b = [pool.submit(streamed, i) for i in range(2)]
        assert [f.result().choices[0].message.content for f in a] == [cli["steered"]["text"]] * 2
        assert [f.result() for f in b] == [cli["baseline"]["text"]] * 2


def test_bearer_token_is_required(url, service):
    bad = openai.OpenAI(base_url=url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.models.list()
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "invalid_api_key"
    status, error = error_of(url, {"model": service.model_id}, key=None)
    assert status == 401 and error["type"] == "invalid_request_error"


def error_of(url, body, path="/chat/completions", raw=None, key=KEY, kind="application/json"):
    """(status, error object) of a POST with this JSON body (or raw bytes)."""
    headers = {"Content-Type": kind}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    content = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", content, headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    text = caught.value.read().decode()
    assert "Traceback" not in text
    error = json.loads(text)["error"]
    assert set(error) == {"message", "type", "param", "code"} and "\n" not in error["message"]
    return caught.value.code, error


def test_bad_requests_get_openai_error_bodies(url, service, client):
    chat = {"model": service.model_id, "messages": [{"role": "user", "content": "Hi"}]}
    for raw in (b"{not json", b"", b"\xff"):
        status, error = error_of(url, None, raw=raw)
        assert status == 400 and "not valid JSON" in error["message"]
    status, error = error_of(url, None, raw=b"[1]")
    assert status == 400 and "JSON object" in error["message"]
    # `curl -d` sends form-encoded JSON: it is read as JSON all the same
    status, error = error_of(url, {**chat, "n": 2}, kind="application/x-www-form-urlencoded")
    assert status == 400 and error["param"] == "n"
    status, error = error_of(url, {**chat, "model": "gpt-4o"})
    assert (status, error["code"], error["param"]) == (404, "model_not_found", "model")
    status, error = error_of(url, {**chat, "steer": "0=oops"})
    assert status == 400 and error["param"] == "steer"
    assert error["message"] == "steering expression, column 3: unexpected 'oops': expected a number"
    status, error = error_of(url, {**chat, "steer": "2 v:nowhere"})
    assert status == 400 and error["param"] == "steer" and "nowhere" in error["message"]
    status, error = error_of(url, {**chat, "steer": "64=3"})
    assert status == 400 and "feature 64 is out of range" in error["message"]
    status, error = error_of(url, {**chat, "temperature": -1})
    assert status == 400 and error["param"] == "temperature"
    status, error = error_of(url, {**chat, "max_tokens": 10_000})
    assert status == 400 and "max_tokens" in error["message"]
    status, error = error_of(url, {"model": service.model_id})
    assert status == 400 and error["param"] == "messages"
    status, error = error_of(url, {**chat, "messages": [{"role": "user", "content": "  "}]})
    assert status == 400 and "empty" in error["message"]
    status, error = error_of(url, {"model": service.model_id, "prompt": ["a", "b"]}, "/completions")
    assert status == 400 and error["param"] == "prompt"
    status, error = error_of(url, {}, "/nowhere")
    assert status == 404
    with pytest.raises(openai.BadRequestError) as caught:  # what a client sees
        client.chat.completions.create(**chat, extra_body={"steer": "7=1:sideways"})
    assert "unknown mode 'sideways'" in caught.value.body["message"]


def test_a_client_that_leaves_a_stream_stops_its_generation(url, service, monkeypatch):
    emitted = []
    run = service.run

    def counted(job, emit, cancelled):
        return run(job, lambda piece: (emitted.append(piece), emit(piece)), cancelled)

    monkeypatch.setattr(service, "run", counted)
    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
    stream = client.completions.create(
        model=service.model_id, prompt=PROMPT, max_tokens=200, stream=True
    )
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()  # the client hangs up
    deadline = time.monotonic() + 30
    while service.pending:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert 3 <= len(emitted) < 200 and emitted[-1].finish_reason is None


def test_a_fault_in_the_model_thread_is_an_error_body_not_a_traceback(
    client, service, url, monkeypatch
):
    def broken(job, emit, cancelled):
        emit(Piece("half", None, 1))
        raise RuntimeError("CUDA went away")

    monkeypatch.setattr(service, "run", broken)
    ask = dict(model=service.model_id, prompt=PROMPT, max_tokens=8)
    with pytest.raises(openai.InternalServerError) as caught:
        client.completions.create(**ask)
    assert caught.value.status_code == 500 and caught.value.body["type"] == "server_error"
    assert "CUDA" not in caught.value.body["message"]  # the details stay in the server's log
    with pytest.raises(openai.APIError) as streamed:  # the stream started: an error event
        list(client.completions.create(**ask, stream=True))
    assert streamed.value.body["type"] == "server_error"
    monkeypatch.undo()
    assert client.completions.create(**ask).choices[0].text  # the server goes on
