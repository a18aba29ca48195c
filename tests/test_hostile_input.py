"""Hostile input through the Python API (Session) and through the magic (in-process shell), and the HTML.

Invalid input: a short, clear error and zero requests sent. Valid input that is shown in HTML (status
card, history table, job repr, panel labels, error cards quoting the service) is escaped: the raw
payloads never appear in any `text/html` bundle or HTML widget value.
"""
from __future__ import annotations

import html
import json
import shlex
import time

import pytest
from conftest import KEY
from reliability_util import seen, write_figures
from test_magics import assert_short_error, ip, run  # noqa: F401 - `ip` is a fixture

from imagen4_jupyter import GenerationRequest, Imagen4Client
from imagen4_jupyter.api import cards as C
from imagen4_jupyter.api import errors as E
from imagen4_jupyter.api.client import check_base_url, check_task_id
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session

PAYLOADS = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "\"'><script>alert(2)</script>",
            "<b>bold</b>")
BIG_INT = 10 ** 5000  # str() of it raises ValueError in Python >= 3.11 unless checked first
CB_OK = "http://127.0.0.1:9/hook"  # loopback: the simulator's callback attempt goes nowhere


def _h(*cases):
    return [pytest.param(*c[1:], id=c[0]) for c in cases]


# (id, create() kwargs, magic cell, valid, words in the error / the prompt the magic sends)
REQUESTS = _h(
    ("html-bold", dict(prompt="<b>bold</b> & <i>it</i>"), "%%imagen4\n<b>bold</b> & <i>it</i>", True, None),
    ("script", dict(prompt=PAYLOADS[0]), "%%imagen4\n" + PAYLOADS[0], True, None),
    ("img-onerror", dict(prompt=PAYLOADS[1]), "%%imagen4\n" + PAYLOADS[1], True, None),
    ("attribute-breakout", dict(prompt=PAYLOADS[2]), "%%imagen4\n" + PAYLOADS[2], True, None),
    ("braces-json", dict(prompt='a fox {"style": "ink"} {{x}}'), '%%imagen4\na fox {"style": "ink"} {{x}}', True,
     'a fox {"style": "ink"} {x}'),
    ("braces-format-spec", dict(prompt="{0} {!r} {:>10} {"), "%%imagen4\n{0} {!r} {:>10} {", True, None),
    ("braces-dunder-attr", None, "%%imagen4\n{x.__class__}", False, "has no attribute `__class__`"),
    ("braces-unknown", None, "%%imagen4\na {nobody_defined_this}", False, "names no variable"),
    ("prompt-5000", dict(prompt="p" * 5000), "%%imagen4\n" + "p" * 5000, True, None),
    ("prompt-5001", dict(prompt="p" * 5001), "%%imagen4\n" + "p" * 5001, False, "limit is 5000"),
    ("prompt-5000-unicode", dict(prompt="é" * 5000), "%%imagen4\n" + "é" * 5000, True, None),
    ("unicode", dict(prompt="東京の夜景, café, naïve, Ελληνικά"), "%%imagen4\n東京の夜景, café, naïve, Ελληνικά",
     True, None),
    ("rtl", dict(prompt="مرحبا بالعالم \u202egnp.exe"), "%%imagen4\nمرحبا بالعالم \u202egnp.exe", True, None),
    ("emoji", dict(prompt="🦊🌸👩\u200d🚀 a fox astronaut"), "%%imagen4\n🦊🌸👩\u200d🚀 a fox astronaut", True, None),
    ("ansi-escape", dict(prompt="\x1b[31mred\x1b[0m text"), "%%imagen4\n\x1b[31mred\x1b[0m text", True, None),
    ("nul", dict(prompt="a\x00b"), "%%imagen4\na\x00b", False, "NUL"),
    ("empty", dict(prompt=""), "%%imagen4\n", False, "empty"),
    ("whitespace", dict(prompt=" \n\t "), "%%imagen4\n \n\t \n", False, "empty"),
    ("only-separator", None, "%%imagen4\n---\nno people", False, "empty"),
    ("negative-script", dict(prompt="calm sea", negative_prompt=PAYLOADS[0]),
     f"%%imagen4\ncalm sea\n---\n{PAYLOADS[0]}", True, "calm sea"),
    ("negative-5001", dict(prompt="x", negative_prompt="n" * 5001), "%%imagen4\nx\n---\n" + "n" * 5001, False,
     "limit is 5000"),
    ("n-0", dict(prompt="x", num_images=0), "%%imagen4 -n 0\nx", False, "from 1 to 4"),
    ("n-5", dict(prompt="x", num_images=5), "%%imagen4 -n 5\nx", False, "from 1 to 4"),
    ("n-minus-1", dict(prompt="x", num_images=-1), "%%imagen4 -n -1\nx", False, "1 to 4"),
    ("n-two", dict(prompt="x", num_images="two"), "%%imagen4 -n two\nx", False, "whole number"),
    ("n-2.5", dict(prompt="x", num_images=2.5), "%%imagen4 -n 2.5\nx", False, "whole number"),
    ("n-empty", dict(prompt="x", num_images=""), "%%imagen4 -n ''\nx", False, "whole number"),
    ("n-string-2", dict(prompt="n two", num_images="2"), "%%imagen4 -n 2\nn two", True, None),
    ("ratio-2:1", dict(prompt="x", aspect_ratio="2:1"), "%%imagen4 -a 2:1\nx", False, "Aspect ratio '2:1'"),
    ("ratio-html", dict(prompt="x", aspect_ratio="<b>1:1</b>"), "%%imagen4 -a '<b>1:1</b>'\nx", False,
     "is not supported"),
    ("ratio-injection", dict(prompt="x", aspect_ratio="1:1; rm -rf /"), "%%imagen4 -a '1:1; rm -rf /'\nx", False,
     "is not supported"),
    ("ratio-empty", dict(prompt="x", aspect_ratio=""), "%%imagen4 -a ''\nx", False, "is not supported"),
    ("ratio-x", dict(prompt="x", aspect_ratio="16x9"), "%%imagen4 -a 16x9\nx", False, "is not supported"),
    ("seed-500", dict(prompt="seed 500", seed="9" * 500), "%%imagen4 -s " + "9" * 500 + "\nseed 500", True, None),
    ("seed-501", dict(prompt="x", seed="9" * 501), "%%imagen4 -s " + "9" * 501 + "\nx", False, "limit is 500"),
    ("seed-huge-int", dict(prompt="x", seed=BIG_INT), "%%imagen4 -s " + "9" * 5000 + "\nx", False, "limit is 500"),
    ("seed-script", dict(prompt="seeded", seed=PAYLOADS[1]), f"%%imagen4 -s {shlex.quote(PAYLOADS[1])}\nseeded",
     True, None),
    ("seed-nul", dict(prompt="x", seed="1\x002"), None, False, "NUL"),
    ("callback-javascript", dict(prompt="x", callback_url="javascript:alert(1)"),
     "%%imagen4 --callback-url javascript:alert(1)\nx", False, "http(s) URL"),
    ("callback-javascript-caps", dict(prompt="x", callback_url="JaVaScRiPt:alert(1)"),
     "%%imagen4 --callback-url JaVaScRiPt:alert(1)\nx", False, "http(s) URL"),
    ("callback-data", dict(prompt="x", callback_url="data:text/html,<script>alert(1)</script>"),
     "%%imagen4 --callback-url 'data:text/html,<script>alert(1)</script>'\nx", False, "http(s) URL"),
    ("callback-credentials", dict(prompt="x", callback_url="https://u:p@127.0.0.1/hook"),
     "%%imagen4 --callback-url https://u:p@127.0.0.1/hook\nx", False, "user name or password"),
    ("callback-loopback-ok", dict(prompt="with hook", callback_url=CB_OK),
     f"%%imagen4 --callback-url {CB_OK}\nwith hook", True, None),
)

TASK_IDS = _h(
    ("dotdot", "../../etc/passwd"), ("dotdot-inside", "task_1/../../x"), ("slash", "task/1"),
    ("dots-only", ".."), ("script", "task_<script>"), ("space", "task 1"), ("newline-at-end", "task_1\n"),
    ("empty", ""), ("too-long", "t" * 129), ("query", "task_1&taskId=other"), ("percent", "task_%2e%2e"),
)

BASE_URLS = _h(
    ("credentials", "https://user:s3cretpw@api.apikley.ru", "user name or password"),
    ("username-only", "https://s3cretpw@api.apikley.ru", "user name or password"),
    ("credentials-no-scheme", "//user:s3cretpw@api.apikley.ru", "user name or password"),
    ("no-scheme-at", "s3cretpw@api.apikley.ru", "https://api.apikley.ru"),
    ("credentials-http-loopback", "http://user:s3cretpw@127.0.0.1:9", "user name or password"),
    ("plain-http-remote", "http://example.com", "plain http"),
    ("plain-http-lookalike", "http://127.0.0.1.example.com", "plain http"),
    ("javascript", "javascript:alert(1)", "https://api.apikley.ru"),
    ("file", "file:///etc/passwd", "https://api.apikley.ru"),
)

PY_REQUESTS = [p for p in REQUESTS if p.values[0] is not None]  # the rest is magic syntax (interpolation, ---)
MAGIC_REQUESTS = [p for p in REQUESTS if p.values[1] is not None]  # a NUL byte cannot be typed into a line
MAGIC_TASK_IDS = [p for p in TASK_IDS if "\n" not in p.values[0]]  # a line magic cannot hold a newline

COUNTS = {"python": 0, "magic": 0, "invalid_refused_zero_requests": 0, "valid_escaped": 0}


@pytest.fixture(scope="module", autouse=True)
def _figures():
    yield
    write_figures("hostile-input", {"cases": sum(COUNTS[k] for k in ("python", "magic")),
                                    "distinct_inputs": len(REQUESTS) + len(TASK_IDS) + len(BASE_URLS), **COUNTS})


def _html_ok(text: str) -> None:
    """No raw payload in an HTML string (escaped forms are fine)."""
    for payload in PAYLOADS:
        assert payload not in text, text[:400]
    assert "<script" not in text.lower() and "<img src=x" not in text, text[:400]


def _short(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and len(text) < 400, text
    return text


@pytest.fixture
def session(make_client, tmp_path):
    s = Session(client=make_client(), history=History(tmp_path / ".imagen4" / "hostile.jsonl"))
    yield s
    s.close()


# -- through the Python API ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, cell, valid, says", PY_REQUESTS)
def test_request_through_the_python_api(session, sim, kwargs, cell, valid, says):
    COUNTS["python"] += 1
    if not valid:
        with pytest.raises(E.InvalidRequestError) as info:
            session.submit(GenerationRequest.create(**kwargs))
        seen(info.value)
        assert says in _short(info.value)
        assert sim.count() == 0  # nothing sent at all
        COUNTS["invalid_refused_zero_requests"] += 1
        return
    request = GenerationRequest.create(**kwargs)
    job = session.submit(request)
    job.wait(10)
    sent = [r for r in sim.requests if r.endpoint == "createTask"]
    assert len(sent) == 1 and GenerationRequest.from_payload(json.loads(sent[0].body)) == request
    for bundle_html in (C.card_bundle(job)["text/html"], job._repr_html_(), job.wait(0)._repr_html_()):
        _html_ok(bundle_html)
    seen(job)
    COUNTS["valid_escaped"] += 1


# -- through the magic ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, cell, valid, says", MAGIC_REQUESTS)
def test_request_through_the_magic(ip, sim, kwargs, cell, valid, says):  # noqa: F811
    COUNTS["magic"] += 1
    ip.user_ns["x"] = 1
    if not valid:
        r = run(ip, cell)
        assert_short_error(r, says)
        assert sim.count() == 0 and not r.outputs
        seen(r.text)
        COUNTS["invalid_refused_zero_requests"] += 1
        return
    line, _, body = cell.partition("\n")
    r = run(ip, line.replace("%%imagen4", "%%imagen4 --wait", 1) + "\n" + body)
    assert r.result.error_in_exec is None, r.text
    sent = [r_ for r_ in sim.requests if r_.endpoint == "createTask"]
    assert len(sent) == 1
    prompt = json.loads(sent[0].body)["input"]["prompt"]
    assert prompt == (says or kwargs["prompt"])  # `says` holds the prompt after interpolation, if it differs
    hist = run(ip, "%imagen4 history")
    outputs = r.outputs + hist.outputs
    htmls = [o["data"]["text/html"] for o in outputs if "text/html" in o["data"]]
    assert htmls
    for text in htmls:
        _html_ok(text)
    seen(r.text, hist.text)
    COUNTS["valid_escaped"] += 1


# -- task ids --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task_id", TASK_IDS)
def test_bad_task_id_python(sim, session, task_id):
    COUNTS["python"] += 1
    for call in (check_task_id, session.client.get_task, session.client.track):
        with pytest.raises(E.InvalidRequestError) as info:
            call(task_id)
        assert "is not a valid task id" in _short(info.value)
        seen(info.value)
    assert sim.count() == 0
    COUNTS["invalid_refused_zero_requests"] += 1


@pytest.mark.parametrize("task_id", MAGIC_TASK_IDS)
def test_bad_task_id_magic(ip, sim, task_id):  # noqa: F811
    COUNTS["magic"] += 1
    for sub in ("show", "status"):
        r = run(ip, f"%imagen4 {sub} {shlex.quote(task_id)}")
        assert_short_error(r, "is not a valid task id")
        assert not r.outputs
    assert sim.count() == 0
    COUNTS["invalid_refused_zero_requests"] += 1


# -- base URLs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, says", BASE_URLS)
def test_bad_base_url_python(tmp_path, url, says):
    COUNTS["python"] += 1
    with pytest.raises(E.ConfigurationError) as info:
        Imagen4Client(api_key=KEY, base_url=url, cache_dir=tmp_path)
    text = _short(info.value)
    assert says in text and "s3cretpw" not in text  # the password is not repeated in the message
    with pytest.raises(E.ConfigurationError):
        check_base_url(url)
    seen(info.value)
    COUNTS["invalid_refused_zero_requests"] += 1


@pytest.mark.parametrize("url, says", BASE_URLS)
def test_bad_base_url_magic(ip, sim, monkeypatch, url, says):  # noqa: F811
    COUNTS["magic"] += 1
    monkeypatch.setenv("APIKLEY_BASE_URL", url)
    r = run(ip, "%%imagen4\na fox")
    assert_short_error(r, says)
    assert "s3cretpw" not in r.text
    assert sim.count() == 0
    COUNTS["invalid_refused_zero_requests"] += 1


def test_plain_http_base_url_refused_before_any_request_and_opt_out(tmp_path, monkeypatch):
    """The key is never sent over plain http to a non-loopback host; the opt-out only constructs here."""
    monkeypatch.delenv("APIKLEY_ALLOW_INSECURE_HTTP", raising=False)
    with pytest.raises(E.ConfigurationError, match="Refusing to send the API key over plain http to example.com"):
        Imagen4Client(api_key=KEY, base_url="http://example.com", cache_dir=tmp_path)
    with Imagen4Client(api_key=KEY, base_url="http://example.com", cache_dir=tmp_path, allow_insecure_http=True) as c:
        assert c.base_url == "http://example.com" and KEY not in repr(c)
    monkeypatch.setenv("APIKLEY_ALLOW_INSECURE_HTTP", "1")
    with Imagen4Client(api_key=KEY, base_url="http://example.com", cache_dir=tmp_path) as c:
        assert c.base_url == "http://example.com"
    monkeypatch.setenv("APIKLEY_ALLOW_INSECURE_HTTP", "0")
    with pytest.raises(E.ConfigurationError):
        Imagen4Client(api_key=KEY, base_url="http://example.com", cache_dir=tmp_path)
    for ok in ("http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9", "https://example.com"):
        with Imagen4Client(api_key=KEY, base_url=ok, cache_dir=tmp_path) as c:  # constructing sends nothing
            assert c.base_url == ok


# -- what the service says, shown in HTML ----------------------------------------------------------------------
def test_hostile_service_messages_are_escaped_in_cards(ip, sim):  # noqa: F811
    sim.next_outcomes.append({"fail": ("400", PAYLOADS[1])})
    r = run(ip, "%%imagen4 --no-wait -o job\na fox", settle=lambda: ip.user_ns["job"].exception(10))
    sim.inject("recordInfo", code=422, msg=PAYLOADS[0])
    r2 = run(ip, "%%imagen4 --no-wait -o job\nanother fox", settle=lambda: ip.user_ns["job"].exception(10))
    htmls = [o["data"]["text/html"] for o in r.outputs + r2.outputs if "text/html" in o["data"]]
    assert any(html.escape(PAYLOADS[1]) in h for h in htmls) and any(html.escape(PAYLOADS[0]) in h for h in htmls)
    for text in htmls + [o["data"]["text/html"] for o in run(ip, "%imagen4 history").outputs]:
        _html_ok(text)


# -- the panel's labels ------------------------------------------------------------------------------------------
def _widget_texts(root) -> list[str]:
    """Every string value, description, tooltip and placeholder of a widget tree."""
    import ipywidgets as W

    out, stack, done = [], [root], set()
    while stack:
        w = stack.pop()
        if id(w) in done:
            continue
        done.add(id(w))
        for name in ("value", "description", "tooltip", "placeholder"):
            v = getattr(w, name, None)
            if isinstance(v, str) and not isinstance(w, (W.Textarea, W.Text)):
                out.append(v)
        stack.extend(getattr(w, "children", ()) or ())
        for v in vars(w).values():
            if isinstance(v, W.Widget):
                stack.append(v)
    return out


def test_panel_labels_escape_prompts_seeds_errors_and_history(session, sim):
    from imagen4_jupyter.notebook.panel import Panel

    for i, payload in enumerate(PAYLOADS):
        session.submit(GenerationRequest.create(payload, seed=PAYLOADS[(i + 1) % len(PAYLOADS)])).wait(10)
    sim.next_outcomes.append({"fail": ("400", PAYLOADS[0])})
    failed = session.submit(GenerationRequest.create("the service answers with HTML"))
    assert failed.exception(10) is not None
    time.sleep(0.1)
    panel = Panel(session=session)
    try:
        panel.prompt.value = PAYLOADS[2]
        panel.seed.value = "s" * 501  # invalid: the reason line quotes nothing raw
        panel.validate()
        for job in session.jobs.values():
            if job.images:
                panel.show_images(job)
                panel.select((job, job.images[0]))
        panel.render_tasks()
        panel.refresh_history()
        texts = _widget_texts(panel)
        joined = "\n".join(texts)
        assert html.escape(PAYLOADS[0]) in joined and "limit is 500" in joined  # they are shown, escaped
        for text in texts:
            _html_ok(text)
    finally:
        panel.close()
    COUNTS["panel_label_checks"] = len(texts)


def test_reliability_page_quotes_these_counts():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text(encoding="utf-8")
    python = len(PY_REQUESTS) + len(TASK_IDS) + len(BASE_URLS)
    magic = len(MAGIC_REQUESTS) + len(MAGIC_TASK_IDS) + len(BASE_URLS)
    invalid = sum(not p.values[2] for p in PY_REQUESTS + MAGIC_REQUESTS) + len(TASK_IDS) + len(MAGIC_TASK_IDS)
    invalid += 2 * len(BASE_URLS)
    valid = sum(bool(p.values[2]) for p in PY_REQUESTS + MAGIC_REQUESTS)
    distinct = len(REQUESTS) + len(TASK_IDS) + len(BASE_URLS)
    assert (f"| hostile inputs | {distinct} distinct, **{python + magic} cases** ({python} through the Python API, "
            f"{magic} through the magic): {invalid} refused with zero requests sent, {valid} valid ones") in page
