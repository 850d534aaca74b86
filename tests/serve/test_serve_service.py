"""SteeringService without HTTP: jobs queue on one model thread, a cancelled job stops."""

from __future__ import annotations

import threading

import pytest
from builders import planted_sae
from conftest import make_tiny_lm

from steer.serve.service import SteeringService


@pytest.fixture(scope="module")
def service():
    lm = make_tiny_lm("llama")
    svc = SteeringService(lm, planted_sae(lm), max_tokens=12)
    yield svc
    svc.close()


def test_a_cancelled_job_stops_between_tokens(service):
    job = service.prepare("The Golden Gate", chat=None, steer="0=40:add")
    pieces = []
    service.submit(job, pieces.append, lambda: len(pieces) >= 2).result()
    assert len(pieces) == 2 and pieces[-1].finish_reason is None  # 2 of 12 tokens
    skipped = []
    service.submit(job, skipped.append, lambda: True).result()
    assert skipped == []  # cancelled before it started: never run
    assert service.complete(job).completion_tokens == 12


def test_jobs_run_one_at_a_time_in_order(service, monkeypatch):
    running, most, order = [0], [0], []
    lock = threading.Lock()
    run = service.run

    def counted(job, emit, cancelled):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            order.append(job.steer)
        try:
            run(job, emit, cancelled)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(service, "run", counted)
    jobs = [
        service.prepare("Paris is", chat=False, steer=s) for s in ("", "0=40:add", "1=5 @prompt")
    ]
    futures = [service.submit(job, lambda piece: None) for job in jobs]
    for future in futures:
        future.result(timeout=60)
    assert most[0] == 1 and order == ["", "40 #0:add", "5 #1 @prompt"]
    assert service.pending == 0


def test_prepare_checks_before_any_model_work(service):
    with pytest.raises(ValueError, match="feature 64 is out of range"):
        service.prepare("Hi", chat=None, steer="64=1")
    with pytest.raises(ValueError, match="max_tokens 300 is too many"):
        service.prepare("Hi", chat=None, steer="", max_tokens=300)
    with pytest.raises(ValueError, match="top_p"):
        service.prepare("Hi", chat=None, steer="", top_p=0)
    no_sae = SteeringService(service.lm)
    with pytest.raises(ValueError, match="no SAE"):
        no_sae.prepare("Hi", chat=None, steer="0=1")
    no_sae.close()
