"""What a person sees, without a browser: honest cards (their last update, a bounded animation, what to run), a
stable display id per request, tables' pieces (task ids, dates, thumbnails), the panel's reuse cost line and
key banner, short lines, notes that go once they no longer apply, unreplaced placeholders named, a LICENSE."""
from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace

from test_magics import creates, ip, run  # noqa: F401 - the shell fixture and its helpers

from imagen4_jupyter.api import cards as C
from imagen4_jupyter.api.request import GenerationRequest, unreplaced, unreplaced_note

ROOT = Path(__file__).resolve().parent.parent


def fake_job(status: str, *, finished: bool = False, task_id: str | None = "task_google_17965934087861",
             model: str | None = None) -> SimpleNamespace:
    request = GenerationRequest.create("a lighthouse in fog", aspect_ratio="16:9", seed=7,
                                       **({"model": model} if model else {}))
    return SimpleNamespace(task_id=task_id, status=status, request=request, error=None, images=[], elapsed=2.5,
                           finished=finished, cost=None, send_at=None, local_id="q1")


def test_a_running_card_says_when_it_was_updated_turns_for_a_bounded_time_and_what_to_run():
    before = time.time()
    bundle = C.card_bundle(fake_job("generating"))
    html, text = bundle["text/html"], bundle["text/plain"]
    stamp = int(re.search(r"data-updated='(\d+)'", html).group(1))
    assert before * 1000 - 1 <= stamp <= time.time() * 1000 + 1
    assert "infinite" not in html  # the saved card stops turning by itself
    assert f"animation:imagen4-spin 1s linear {C.LIVE_SECONDS}," in html
    assert f"imagen4-still 0s {C.LIVE_SECONDS}s forwards" in html  # then closes into a still ring
    assert f"animation:imagen4-fresh {C.LIVE_SECONDS}s steps(1) 1" in html  # the hint shows once it is stale
    assert "stopped changing? run <code>%imagen4 show task_google_17965934087861</code>" in html
    assert "<code>%imagen4 resume</code> after a kernel restart" in html
    assert "if it stops changing: %imagen4 show task_google_17965934087861" in text
    assert "(after a kernel restart: %imagen4 resume)" in text
    # a request still in the send queue: no task id to show, so `%imagen4 wait`
    queued = C.card_bundle(fake_job("pacing", task_id=None))
    assert "<code>%imagen4 wait</code>" in queued["text/html"] and "%imagen4 show" not in queued["text/html"]


def test_a_finished_card_neither_turns_nor_asks_for_anything():
    html = C.card_bundle(fake_job("success", finished=True))["text/html"]
    assert "imagen4-spin" not in html.split("</style>", 1)[1] and "imagen4-stale" not in html
    assert "data-updated=" in html and "✓ done" in html


def test_every_card_names_its_model_the_standard_one_too():
    assert C.params_text({"aspect_ratio": "1:1", "num_images": 1}).startswith("standard · 1:1 · 1 image")
    assert "standard · 16:9 · 1 image · seed 7" in C.card_bundle(fake_job("generating"))["text/html"]
    fast = C.card_bundle(fake_job("generating", model="fast"))["text/html"]
    assert "fast · 16:9 · 1 image · seed 7" in fast


def test_a_task_id_gives_way_in_its_middle_and_keeps_its_whole_text():
    tid = "task_google_17965934087861"
    html = C.task_id_html(tid)
    assert f"title='{tid}'" in html
    assert re.sub(r"<[^>]+>", "", html) == tid  # a copy takes the whole id
    assert f">{tid[:-6]}</span>{tid[-6:]}</span>" in html  # the head gives way, the last 6 characters stay
    assert "text-overflow:ellipsis" in html and "max-width:calc(100% - 6ch)" in html
    assert "flex" not in html  # inline boxes only: a copy takes the id on one line
    assert C.task_id_html(None) == ""


def test_dates_fit_one_line_with_the_whole_time_on_hover():
    ts = time.mktime((time.localtime().tm_year, 3, 4, 5, 6, 7, 0, 0, -1))
    html = C.when_html(ts)
    assert ">4 Mar 05:06</span>" in html and f"title='{C.when(ts)}'" in html and "white-space:nowrap" in html
    assert C.short_when(ts - 400 * 86400).endswith(str(time.localtime().tm_year - 1))


def test_table_thumbnails_keep_their_ratio(tmp_path):
    from PIL import Image

    wide, tall = tmp_path / "wide.png", tmp_path / "tall.png"
    Image.new("RGB", (1600, 900), "red").save(wide)
    Image.new("RGB", (900, 1600), "blue").save(tall)
    html = C.thumbs_html([wide, tall], ["w", "t"])
    assert html.count("<img ") == 2 and html.count("width:auto;height:auto") == 2
    assert "object-fit" not in html and "max-width:24px;max-height:24px" in html


def test_unreplaced_placeholders_are_named_and_plain_ones_are_not():
    text = "a {subject} {subject.upper()} {subject!r} {n:>3} {name[0]} {{lit}} {\"json\": 1} {a.b} {subject!r}"
    assert unreplaced(text) == ["{subject.upper()}", "{subject!r}", "{n:>3}", "{name[0]}"]
    note = unreplaced_note(text)
    assert note == "Left as written: {subject.upper()}, {subject!r}, {n:>3} and 1 more (only {name} and " \
        "{name.attr} are replaced)."
    assert len(note) <= 110 and unreplaced_note("a {subject} and {a.b}") == ""


def test_a_cell_says_which_placeholders_it_left_as_written(ip, sim):  # noqa: F811
    r = run(ip, "subject = 'fox'", "%%imagen4 --wait -s 1\na {subject} {subject.upper()} {subject!r}")
    assert r.result.error_in_exec is None, r.text
    said = " ".join(o["data"].get("text/plain", "") for o in r.outputs)
    assert "Left as written: {subject.upper()}, {subject!r} (only" in said, said
    assert [c["input"]["prompt"] for c in creates(sim)] == ["a fox {subject.upper()} {subject!r}"]


def test_a_spend_with_nothing_to_show_says_so_in_one_line(ip, sim):  # noqa: F811
    r = run(ip, "%imagen4 spend")
    texts = [o["data"]["text/plain"] for o in r.outputs]
    assert len(texts) == 1 and texts[0].startswith("[imagen4] Nothing spent yet: no tasks in"), texts
    assert "<table" not in str(r.outputs)


def test_a_request_keeps_one_display_id_that_a_later_view_of_it_shares(ip, sim):  # noqa: F811
    sim.generation_time = 4.0  # still running when it is shown again
    first = run(ip, "%%imagen4 --no-wait -s 3 -o job\na slow heron")
    job = ip.user_ns["job"]
    card_id = first.display_ids(created=True)[0]
    assert card_id == f"imagen4-{job.local_id}" and first.display_ids(created=True)[1] == f"{card_id}-image-0"
    ip.imagen4.session.client.wait_sent(job, 10)
    deadline = time.monotonic() + 5
    while job.task_id not in ip.imagen4.session.jobs and time.monotonic() < deadline:  # adopted by the session
        time.sleep(0.01)
    assert not job.done(), (job.status, job.error)
    again = run(ip, f"%imagen4 show {job.task_id}")  # a second view of the running task: the same display id
    assert again.display_ids(created=True)[:1] == [card_id], (again.outputs, again.text)
    job.wait(20)
    # the history keeps the local id with the task id, so a view opened from the history (resume) finds it too
    assert ip.imagen4.session.history.get(job.task_id).local_id == job.local_id


def test_a_note_about_running_tasks_is_removed_once_they_are_done(ip, sim):  # noqa: F811
    sim.generation_time = 0.5
    run(ip, "%%imagen4 --no-wait -s 4 -o job\na patient egret")
    job = ip.user_ns["job"]
    r = run(ip, settle=lambda: (ip.imagen4.views.say_until("its images will appear here", [job]), job.wait(20),
                                time.sleep(0.2)))
    (note,) = [o for o in r.outputs if "its images will appear here" in o["data"].get("text/plain", "")]
    note_id = note["transient"]["display_id"]
    cleared = [o for o in r.outputs if o["update"] and o["transient"].get("display_id") == note_id]
    assert cleared and cleared[-1]["data"] == {"text/plain": ""}


def test_the_load_line_keeps_within_100_characters_at_word_boundaries():
    from imagen4_jupyter.notebook.service import fit_lines

    assert fit_lines(["imagen4: short", "key set"]) == "imagen4: short · key set"
    long = fit_lines(["imagen4: " + "word " * 30, "key set (from APIKLEY_API_KEY)", "history: /a/b.jsonl"])
    lines = long.splitlines()
    assert all(len(ln) <= 100 for ln in lines) and lines[-2:] == ["  key set (from APIKLEY_API_KEY)",
                                                                  "  history: /a/b.jsonl"]
    assert all(not ln.endswith("wor") for ln in lines)  # never mid-word


def test_the_panel_says_reused_and_0_credits_for_settings_in_the_history(sim, make_client, tmp_path):
    from imagen4_jupyter.notebook.panel import Panel
    from imagen4_jupyter.records.history import History
    from imagen4_jupyter.records.session import Session

    session = Session(client=make_client(), history=History(tmp_path / "h.jsonl"))
    panel = Panel(session=session)
    try:
        panel.prompt.value, panel.seed.value = "a quiet harbour", "41"
        assert "reused" not in panel.controls.cost.value and "credits" in panel.controls.cost.value
        panel.submit(wait=True)["job"].result(20)
        panel.controls.validate()
        assert "reused, 0 credits" in panel.controls.cost.value
        panel.seed.value = ""  # a new random seed each time: never a reuse
        assert "reused" not in panel.controls.cost.value
    finally:
        panel.close()
        session.close()


def test_the_key_banner_clears_by_itself_once_a_key_works(monkeypatch, sim, tmp_path):
    from conftest import KEY

    from imagen4_jupyter.api.credentials import forget_entered_key
    from imagen4_jupyter.notebook import panel as P
    from imagen4_jupyter.records.history import History
    from imagen4_jupyter.records.session import Session

    monkeypatch.delenv("APIKLEY_API_KEY", raising=False)
    monkeypatch.setenv("APIKLEY_BASE_URL", sim.url)
    monkeypatch.setattr(P, "KEY_RECHECK", 0.2)
    forget_entered_key()
    monkeypatch.chdir(tmp_path)
    session = Session(history=History(tmp_path / ".imagen4" / "k.jsonl"), notebook=str(tmp_path / "k.ipynb"))
    panel = P.Panel(session=session)
    try:
        assert panel.banner.layout.display == "flex" and panel.generate.disabled
        assert "  " not in re.sub(r"<[^>]+>", "", panel.banner.text.value)  # no double space
        monkeypatch.setenv("APIKLEY_API_KEY", KEY)  # set elsewhere (a cell, a .env): nobody clicks anything
        deadline = time.monotonic() + 10
        while panel.banner.layout.display != "none" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert panel.banner.layout.display == "none" and panel.banner.reason == ""
        panel.prompt.value = "a fox"
        assert not panel.generate.disabled
    finally:
        panel.close()
        session.close()


def test_plain_python_errors_speak_of_requests_not_cells():
    from imagen4_jupyter.api import errors as E
    from imagen4_jupyter.api.request import GenerationRequest as G

    try:
        G.create("a fox", model="ultra", num_images=2)
    except E.InvalidRequestError as err:
        assert "cell" not in str(err) and "one request per seed" in str(err)
    else:
        raise AssertionError("ultra took 2 images")
    assert "cell" not in E.CancelledError.hint


def test_a_license_file_ships_with_the_package():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "Permission is hereby granted" in text
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '\nlicense = "MIT"\n' in pyproject and '\nlicense-files = ["LICENSE"]\n' in pyproject


def test_the_readme_says_how_root_starts_jupyter():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "jupyter lab --allow-root demo-output/quickstart.ipynb" in readme
    demo = (ROOT / "scripts" / "run_demo.py").read_text(encoding="utf-8")
    assert '" --allow-root" if hasattr(os, "geteuid") and os.geteuid() == 0' in demo
