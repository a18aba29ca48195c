"""Issue 5's fault matrix, at the session level: a Session with a real History, a client on the simulator.

Every case submits one request through `Session.submit` with one fault injected, then checks:
- the outcome: recovered by itself (retryable faults, `times=N`), recovered by `session.resume()` once the
  fault is gone, failed for good with a specific message (with the task id when a task exists), refused
  before a task existed, or "outcome unknown" (createTask sent, no usable answer; never resent);
- the books: every task the simulator created is in the history with a final state, none twice.

test_client.py / test_errors.py / test_images.py check the client-level reactions; this module checks that
the session and its history stay right on top of them, and writes the figures to
test-artifacts/reliability.json (quoted in docs/reliability.md).
"""
from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from reliability_util import seen, write_figures

from imagen4_jupyter import GenerationRequest, RetryPolicy
from imagen4_jupyter.api import errors as E
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session

RECOVERED = "recovered"  # the job succeeded by itself once the fault cleared
RESUMED = "resumed"  # the job failed, the history kept it unfinished, `resume()` finished it (no new task)
FAILED = "failed"  # failed for good, with a specific message; the history says so
REFUSED = "refused"  # createTask answered an error: no task exists, nothing to follow
UNKNOWN = "outcome unknown"  # createTask sent, no usable answer: not resent, recorded as outcome_unknown


def free_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Case:
    id: str
    endpoint: str | None  # where the fault is injected (None: the fault is in the task's outcome)
    fault: dict | None
    expect: str
    error: type[E.Imagen4Error] | None = None
    says: str = ""
    times: int | None = 1
    outcome: dict | None = None
    created: int = 1  # tasks the simulator ends up with
    client: dict = field(default_factory=dict)
    special: str | None = None


SLOW_READ = dict(timeout=(2.0, 0.3))
PATIENT = dict(retry=RetryPolicy(attempts=60, base=0.02, cap=0.05, max_retry_after=0.2))

# body code -> (class on createTask, words, retried on createTask; outcome when it hits recordInfo)
CODES = {
    401: (E.AuthenticationError, "APIKLEY_API_KEY", False, RESUMED),
    402: (E.InsufficientCreditsError, "Top up", False, RESUMED),
    404: (E.NotFoundError, "Check the task id", False, FAILED),
    422: (E.ServiceValidationError, "The service said", False, RESUMED),
    429: (E.RateLimitError, "", True, RECOVERED),
    455: (E.MaintenanceError, "", True, RECOVERED),
    500: (E.ServerError, "Try again after a while", False, RECOVERED),
    501: (E.GenerationFailedError, "Change the prompt", False, FAILED),
    505: (E.FeatureDisabledError, "contact Apikley support", False, RESUMED),
}


def _cases() -> list[Case]:
    cases: list[Case] = []
    for code, (cls, words, create_retried, on_record) in CODES.items():
        if create_retried:  # "not now" answers: nothing was created, so createTask is sent again
            cases.append(Case(f"createTask-code-{code}", "createTask", dict(code=code), RECOVERED, times=2))
        else:
            cases.append(Case(f"createTask-code-{code}", "createTask", dict(code=code), REFUSED, cls, words,
                              times=None, created=0))
        times = 2 if on_record == RECOVERED else 1
        cases.append(Case(f"recordInfo-code-{code}", "recordInfo", dict(code=code), on_record,
                          None if on_record == RECOVERED else cls, words, times=times))
    cases += [
        # HTTP 5xx with an HTML body
        Case("createTask-html-502", "createTask", dict(http_status=502), UNKNOWN, E.OutcomeUnknownError,
             "NOT resent", created=0),
        Case("createTask-html-503", "createTask", dict(http_status=503), REFUSED, E.ServerError,
             "non-JSON error page", created=0),
        Case("recordInfo-html-502", "recordInfo", dict(http_status=502), RECOVERED, times=3),
        Case("recordInfo-html-503", "recordInfo", dict(http_status=503), RECOVERED, times=3),
        Case("recordInfo-html-504", "recordInfo", dict(http_status=504), RECOVERED, times=3),
        Case("image-html-502", "image", dict(http_status=502), RECOVERED, times=2),
        # connection refused
        Case("createTask-refused", None, None, RECOVERED, client=PATIENT, special="refuse-create"),
        Case("recordInfo-refused", None, None, RECOVERED, client=PATIENT, special="refuse-poll"),
        Case("image-refused", "image", "redirect-closed-port", RECOVERED, times=2),
        # connection dropped before / after the answer, or mid-answer
        Case("createTask-drop", "createTask", dict(drop=True), UNKNOWN, E.OutcomeUnknownError, "NOT resent",
             created=0),
        Case("createTask-drop-after", "createTask", dict(drop_after=True), UNKNOWN, E.OutcomeUnknownError,
             "NOT resent"),
        Case("createTask-truncated-answer", "createTask", dict(truncate=True), UNKNOWN, E.OutcomeUnknownError,
             "NOT resent"),
        Case("recordInfo-drop", "recordInfo", dict(drop=True), RECOVERED, times=3),
        Case("recordInfo-drop-after", "recordInfo", dict(drop_after=True), RECOVERED, times=3),
        Case("recordInfo-truncated-answer", "recordInfo", dict(truncate=True), RECOVERED, times=3),
        Case("image-drop", "image", dict(drop=True), RECOVERED, times=2),
        # read timeout
        Case("createTask-read-timeout", "createTask", dict(delay=0.6), UNKNOWN, E.OutcomeUnknownError,
             "timed out", client=SLOW_READ),
        Case("recordInfo-read-timeout", "recordInfo", dict(delay=0.6), RECOVERED, times=2, client=SLOW_READ),
        Case("image-read-timeout", "image", dict(delay=0.6), RECOVERED, times=2, client=SLOW_READ),
        # malformed JSON (a truncated body with HTTP 200)
        Case("createTask-malformed-json", "createTask", dict(malformed=True), UNKNOWN, E.OutcomeUnknownError,
             "NOT resent", created=0),
        Case("recordInfo-malformed-json", "recordInfo", dict(malformed=True), RECOVERED, times=1),
        Case("image-corrupt-bytes", "image", dict(malformed=True), RECOVERED, times=2),
        # what the task itself answers
        Case("resultJson-not-json", None, None, FAILED, E.ProtocolError, "`resultJson` is not valid JSON",
             outcome={"result_json": "not json"}),
        Case("resultJson-without-resultUrls", None, None, FAILED, E.ProtocolError, "no `resultUrls`",
             outcome={"result_json": '{"images": ["x"]}'}),
        Case("resultUrls-empty", None, None, FAILED, E.ProtocolError, "no image URLs",
             outcome={"result_urls": []}),
        Case("generation-failed", None, None, FAILED, E.GenerationFailedError, "flagged by the safety filter",
             outcome={"fail": ("400", "flagged by the safety filter")}),
        # downloads
        Case("image-truncated", "image", dict(truncate=True), RECOVERED, times=2),
        Case("image-expired-404", "image", dict(expired=True), FAILED, E.DownloadError, "expired", times=None),
        Case("image-wrong-content-type", "image", dict(content_type="text/html"), FAILED, E.DownloadError,
             "not an image", times=None),
        Case("image-over-size-cap", None, None, FAILED, E.DownloadError, "cap (max_download_bytes)",
             client=dict(max_download_bytes=300)),
        # redirects to another host: API calls never follow them; image downloads may, without the key
        Case("createTask-redirect", "createTask", dict(redirect="https://elsewhere.example/api"), REFUSED,
             E.ProtocolError, "redirected createTask", created=0),
        Case("recordInfo-redirect", "recordInfo", dict(redirect="https://elsewhere.example/login"), RECOVERED),
        Case("image-redirect-other-host", None, None, RECOVERED, special="image-other-host"),
    ]
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def figures():
    rows: list[dict] = []
    yield rows
    if not rows:
        return
    totals = Counter(r["outcome"] for r in rows)
    summary = {
        "cases_tried": len(rows),
        "recovered": totals[RECOVERED] + totals[RESUMED],
        "recovered_by_themselves": totals[RECOVERED],
        "recovered_by_resume": totals[RESUMED],
        "failed_with_clear_message": totals[FAILED] + totals[REFUSED] + totals[UNKNOWN],
        "failed_for_good": totals[FAILED],
        "refused_no_task_created": totals[REFUSED],
        "outcome_unknown_not_resent": totals[UNKNOWN],
        "tasks_created": sum(r["created"] for r in rows),
        "tasks_in_history_with_final_state": sum(r["in_history_final"] for r in rows),
        "created_but_id_never_received": sum(r["unnamed"] for r in rows),
        "history_unwritable_task_named_in_warning": sum(r.get("named_in_warning", 0) for r in rows),
        "lost": sum(r["lost"] for r in rows),
        "duplicated": sum(r["duplicated"] for r in rows),
        "complete_run": len(rows) == len(CASES) + 2,
    }
    write_figures("reliability", {"summary": summary, "cases": rows})


def wait_final(history: History, task_id: str, timeout: float = 10.0, *, success: bool = False):
    """The history entry once it holds a final event (the job's callbacks run just after `wait()` returns)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = history.get(task_id)
        if entry is not None and (entry.succeeded or (entry.error is not None and not success)):
            return entry
        time.sleep(0.01)
    raise AssertionError(f"no final event for {task_id} in {history.path}")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(case: Case, sim, make_client, tmp_path, figures):
    client = make_client(**case.client)
    history = History(tmp_path / ".imagen4" / "matrix.jsonl")
    session = Session(client=client, history=history)
    restart = None
    if case.outcome is not None:
        sim.next_outcomes.append(case.outcome)
    if case.fault == "redirect-closed-port":
        sim.inject("image", times=case.times, redirect=f"http://127.0.0.1:{free_port()}/1.png")
    elif case.fault is not None:
        sim.inject(case.endpoint, times=case.times, **case.fault)
    if case.special == "refuse-create":  # the port is closed while createTask is tried, then opens again
        sim.stop()
        restart = threading.Timer(0.3, sim.start)
        restart.start()
    elif case.special == "refuse-poll":
        sim.next_outcomes.append({"generation_time": 0.4})
    elif case.special == "image-other-host":
        sim.next_outcomes.append({"generation_time": 0.3})

    request = GenerationRequest.create(f"fault case {case.id}")
    job, err = None, None
    t0 = time.monotonic()
    try:
        job = session.submit(request, queue=False)  # raises what created nothing, as the cells show it
    except E.Imagen4Error as exc:
        err = exc
    finally:
        if restart is not None:
            restart.join()
    if job is not None:
        if case.special == "refuse-poll":  # the service goes away while the task runs
            sim.stop()
            restart = threading.Timer(0.4, sim.start)
            restart.start()
        elif case.special == "image-other-host":
            url = sim.task(job.task_id).image_urls[0]
            sim.inject("image", redirect=url.replace("127.0.0.1", "localhost"))
        err = job.exception(timeout=20)
        if restart is not None:
            restart.join()
        assert job.done(), f"{case.id}: still {job.status}"
        entry = wait_final(history, job.task_id, success=case.expect == RECOVERED)
    seen(err, job, client)
    creates_before_resume = sim.count("createTask")

    # -- the outcome and its message -----------------------------------------------------------------
    outcome = None
    if case.expect == RECOVERED:
        assert job is not None and err is None, f"{case.id}: {err!r}"
        assert entry.succeeded and len(entry.images) == 1
        assert all((history.folder / im["path"]).resolve().is_file() for im in entry.images)
        outcome = RECOVERED
    else:
        assert err is not None, f"{case.id} did not fail"
        assert type(err) is case.error, f"{case.id}: {err!r}"
        text = str(err)
        assert case.says in text, text
        assert "\n" not in text and len(text) < 500, text  # short enough for a notebook
        if job is not None:  # a task exists: its id is in the message and on the error
            assert err.task_id == job.task_id and job.task_id in text, text
            assert entry.error is not None and entry.error["message"] == text
        if case.expect == RESUMED:
            assert not entry.finished, "a resumable failure must stay unfinished in the history"
            sim.clear_faults()
            resumed = session.resume()
            assert [j.task_id for j in resumed] == [job.task_id]
            resumed[0].wait(10)
            entry = wait_final(history, job.task_id, success=True)
            assert entry.succeeded and entry.finished
            outcome = RESUMED
        elif case.expect == FAILED:
            assert job is not None and entry.finished  # final: resume leaves it alone
            assert session.resume() == []
            outcome = FAILED
        elif case.expect == REFUSED:
            assert job is None and history.tasks == {} and not history.unknown
            outcome = REFUSED
        else:
            assert job is None and case.expect == UNKNOWN
            assert isinstance(err, E.OutcomeUnknownError) and "NOT resent" in text
            assert len(history.unknown) == 1 and history.unknown[0]["request"] == request.to_dict()
            assert history.unknown[0]["message"] == text
            outcome = UNKNOWN
    assert sim.count("createTask") == creates_before_resume  # resume never creates

    # -- the books: every created task in the history, final, once --------------------------------------
    # a createTask answered after the client timed out is processed by the service a little later
    time.sleep(0.05 + float((case.fault or {}).get("delay", 0) if isinstance(case.fault, dict) else 0))
    history.refresh()
    assert history.bad_lines == 0
    events = list(history.iter_events())
    submitted = Counter(e["task_id"] for e in events if e["event"] == "submitted")
    sim_ids = set(sim.tasks)
    assert len(sim_ids) == case.created, f"{case.id}: {sorted(sim_ids)}"
    named = sim_ids & set(history.tasks)
    unnamed = sim_ids - set(history.tasks)
    # a task the client never heard of is excused only by an outcome_unknown event naming its request
    excused = min(len(unnamed), len(history.unknown))
    lost = len(unnamed) - excused
    duplicated = sum(n - 1 for n in submitted.values()) + max(0, len(sim_ids) - 1)
    final = [tid for tid in named if history.tasks[tid].succeeded or history.tasks[tid].error is not None]
    assert set(history.tasks) <= sim_ids  # nothing invented
    assert lost == 0 and duplicated == 0 and len(final) == len(named)
    if unnamed:
        for tid in unnamed:  # the task exists on the service with exactly the request the history recorded
            assert json.loads(sim.task(tid).param_json) == request.to_payload()

    figures.append({"case": case.id, "endpoint": case.endpoint, "outcome": outcome, "expected": case.expect,
                    "error": type(err).__name__ if err else None, "message": str(err) if err else None,
                    "created": len(sim_ids), "in_history_final": len(final), "unnamed": len(unnamed),
                    "lost": lost, "duplicated": duplicated, "createTask_requests": sim.count("createTask"),
                    "recordInfo_requests": sim.count("recordInfo"), "image_requests": sim.count("image"),
                    "seconds": round(time.monotonic() - t0, 3)})
    if case.special == "image-other-host":  # the download followed the redirect, and never carried the key
        hosts = [r.headers.get("Host", "") for r in sim.requests if r.endpoint == "image"]
        assert any(h.startswith("localhost:") for h in hosts), hosts
    assert all("Authorization" not in r.headers for r in sim.requests if r.endpoint == "image")
    session.close()


def test_matrix_covers_the_issue():
    """Every fault the issue names has at least one case (and every body code on both endpoints)."""
    ids = {c.id for c in CASES}
    for code in CODES:
        assert {f"createTask-code-{code}", f"recordInfo-code-{code}"} <= ids
    for needle in ("html-502", "refused", "drop", "truncated-answer", "read-timeout", "malformed-json",
                   "resultJson-not-json", "resultJson-without-resultUrls", "resultUrls-empty", "image-truncated",
                   "image-expired-404", "redirect"):
        assert any(needle in i for i in ids), needle
    assert len(CASES) >= 45 and Path(__file__).name == "test_fault_matrix.py"


@pytest.mark.parametrize("fault", [None, dict(drop_after=True)], ids=["created", "outcome-unknown"])
def test_history_not_writable_sends_nothing(sim, make_client, tmp_path, figures, fault):
    """The history folder cannot be written (here: a file stands where the folder should be). Nothing is sent
    without its record, so the request is refused in one line that says where and what to do, and the service
    sees no createTask (the fault armed for it is never reached)."""
    (tmp_path / "blocked").write_text("a file, not a folder")
    session = Session(client=make_client(), history=History(tmp_path / "blocked" / "h.jsonl"))
    if fault:
        sim.inject("createTask", **fault)
    with pytest.raises(E.RecordError) as caught:
        session.submit(GenerationRequest.create("unwritable history"))
    text = str(caught.value)
    seen(caught.value)
    assert text.startswith("Not sent: the history") and str(tmp_path / "blocked") in text and "\n" not in text
    assert "writable" in text and caught.value.not_sent
    assert sim.count("createTask") == 0 and list(sim.tasks) == [] and session.pending() == []
    figures.append({"case": f"history-not-writable-{'unknown' if fault else 'created'}", "endpoint": "history",
                    "outcome": REFUSED, "expected": REFUSED, "error": "RecordError", "message": text, "created": 0,
                    "in_history_final": 0, "unnamed": 0, "lost": 0, "duplicated": 0, "named_in_warning": 0,
                    "createTask_requests": 0, "seconds": None})
    session.close()


def test_reliability_page_quotes_these_figures():
    """docs/reliability.md quotes the totals this matrix produces (each case asserts its expected outcome,
    so the totals follow from the table; the two history-not-writable cases add two refused)."""
    outcomes = Counter(c.expect for c in CASES) + Counter({REFUSED: 2})
    page = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text(encoding="utf-8")
    tried = len(CASES) + 2
    assert f"| fault cases tried | **{tried}** |" in page
    assert (f"| recovered | **{outcomes[RECOVERED] + outcomes[RESUMED]}**: {outcomes[RECOVERED]} by themselves"
            f" once the fault cleared, {outcomes[RESUMED]} by `resume()`") in page
    assert (f"| failed with a clear message | **{outcomes[FAILED] + outcomes[REFUSED] + outcomes[UNKNOWN]}**: "
            f"{outcomes[FAILED]} failed for good") in page
    assert f"{outcomes[REFUSED]} refused before any task existed, {outcomes[UNKNOWN]} \"outcome unknown\"" in page
    assert f"| tasks the simulator created | {sum(c.created for c in CASES)} |" in page
    assert "| **lost** | **0** |" in page and "| **duplicated** | **0** |" in page
