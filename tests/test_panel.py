"""The widget panel at the Python level: set values, click, observe state, against the simulator."""
from __future__ import annotations

import hashlib
import sys
import threading
import time
from pathlib import Path

import ipywidgets as W  # a dependency: missing, these tests fail rather than skip
import pytest
from PIL import Image

from imagen4_jupyter import read_provenance
from imagen4_jupyter.api.request import MAX_PROMPT, GenerationRequest
from imagen4_jupyter.notebook.outputs import history_bundle
from imagen4_jupyter.notebook.panel import DEBOUNCE, Panel, cell_code, code_problem
from imagen4_jupyter.notebook.panel.gallery import THUMB_SCALE
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session


def wait_for(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def session(make_client, tmp_path):
    s = Session(client=make_client(), history=History(tmp_path / "h.jsonl"))
    yield s
    s.close()


@pytest.fixture
def panel(session):
    p = Panel(session=session)
    yield p
    p.close()


def test_import_package_does_not_import_ipywidgets():
    import subprocess

    code = "import imagen4_jupyter, sys; assert 'ipywidgets' not in sys.modules; print(imagen4_jupyter.Panel.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Panel"


def test_generate_disabled_with_reason_until_valid(panel):
    assert panel.generate.disabled
    # before anything was typed: a neutral hint, no error
    assert "imagen4-hint" in panel.reason.value and "Describe the image" in panel.reason.value
    assert "empty" not in panel.reason.value and "imagen4-error" not in panel.reason.value
    panel.prompt.value = "a red fox"
    assert not panel.generate.disabled and panel.reason.value == ""
    panel.prompt.value = ""  # typed, then cleared: now it is an error that says what to fix
    assert panel.generate.disabled and "prompt is empty" in panel.reason.value and "imagen4-error" in panel.reason.value
    panel.prompt.value = "a red fox"
    assert not panel.generate.disabled and panel.reason.value == ""
    assert panel.controls.prompt_count.value == f"9 / {MAX_PROMPT}"
    panel.prompt.value = "x" * (MAX_PROMPT + 3)
    assert panel.generate.disabled
    assert "limit is 5000" in panel.reason.value and "Shorten it by 3" in panel.reason.value
    assert "imagen4-over" in panel.controls.prompt_count._dom_classes
    panel.prompt.value = "ok"
    panel.negative.value = "y" * (MAX_PROMPT + 1)
    assert panel.generate.disabled and "negative prompt" in panel.reason.value
    panel.negative.value = ""
    panel.seed.value = "s" * 501
    assert panel.generate.disabled and "seed" in panel.reason.value
    panel.seed.value = ""
    assert not panel.generate.disabled


def test_invalid_click_sends_nothing(panel, sim):
    panel.generate.click()
    time.sleep(0.2)
    assert sim.count("createTask") == 0
    assert panel.task_rows() == []


def test_generate_two_images_16_9_gallery_and_history(panel, session, sim):
    panel.prompt.value = "a lighthouse at dusk"
    panel.ratio.value = "16:9"
    panel.num.value = "2"
    panel.generate.click()
    assert panel.seed.value == ""  # the box was empty: it stays so, the next Generate gets a new seed
    grid = panel.gallery.grid
    wait_for(lambda: len(grid.children) == 2, what="2 images in the gallery")
    assert sim.count("createTask") == 1
    (task_id, job), = panel.jobs.items()  # tracked by task id
    assert task_id == job.task_id
    assert job.request.aspect_ratio == "16:9" and job.request.num_images == 2
    assert job.request.seed and job.request.seed.isdigit()  # a random seed was chosen and sent
    assert job.task_id in panel.mine
    for card, image in zip(grid.children, job.images, strict=True):
        thumb = card.children[0].children[0]
        assert "imagen4-thumb" in thumb._dom_classes and thumb.value[:4] == b"\x89PNG"
        # the store's one thumbnail cache made it (a file beside the image), not a cache of the panel's own
        side = round(panel.gallery.thumb_size * THUMB_SCALE)
        assert (Path(image.path).parent / ".thumbs" / f"{image.sha256}-{side}").is_file()
    wait_for(lambda: "done" in panel.tasks.text(), what="task row done")
    assert job.task_id in panel.tasks.text()
    # the task is in the session's history with the panel as its source
    entry = session.history.get(job.task_id)
    assert entry.state == "success" and entry.source == "panel" and entry.request["aspect_ratio"] == "16:9"
    # history tab: the `%imagen4 history` table (one renderer), drawn on the poller's workers, searchable
    tab = panel.history_tab
    panel.tabs.selected_index = 1
    wait_for(lambda: job.task_id in tab.table.value, what="history table")
    assert tab.table.value == history_bundle(tab.entries(), session.history, thumbnails=True,
                                             base=Path.cwd())["text/html"]
    assert tab.table.value.count("<img") == 2
    assert tab.pick.value == job.task_id and "panel" in tab.pick.label  # the picker names the source
    tab.search.value = "LIGHTHOUSE"
    wait_for(lambda: len(tab.shown) == 1 and "1 task in" in tab.table.value, what="one match")
    tab.search.value = "no such thing"
    wait_for(lambda: "No task matches" in tab.table.value, what="no match")
    assert tab.pick.value is None and tab.reuse.disabled and tab.show.disabled


def test_queue_several_while_running(make_client, tmp_path):
    from conftest import KEY

    from imagen4_jupyter.simulator import Simulator

    with Simulator(api_keys=(KEY,), queue_time=(0.2, 0.3), generation_time=(0.6, 0.8), image_scale=0.0625) as slow:
        session = Session(client=make_client(base_url=slow.url), history=History(tmp_path / "q.jsonl"))
        before = set(threading.enumerate())
        panel = Panel(session=session)
        try:
            for i in range(3):
                panel.prompt.value = f"tile {i}"  # a change between clicks: never taken for a double click
                assert not panel.generate.disabled
                panel.generate.click()
            wait_for(lambda: len(panel.jobs) == 3, what="3 tasks created")
            wait_for(lambda: len(panel.tasks.list.children) == 3, what="the sending rows give way to the tasks'")
            rows = panel.task_rows()
            assert sum(r["state"] not in ("success", "fail", "error") for r in rows) >= 2  # running together
            assert len({j.request.seed for j in panel.jobs.values()}) == 3
            wait_for(lambda: panel.tasks.ticking, what="the once-a-second refresh")
            assert "running" in panel.tasks.head.value
            bars = [row.bar for row in panel.tasks.list.children]
            assert len(bars) == 3 and all(isinstance(b, W.FloatProgress) and 0 < b.value < 1 for b in bars)
            wait_for(lambda: len(panel.gallery.grid.children) == 3, timeout=20, what="3 images")
            assert slow.count("createTask") == 3
            wait_for(lambda: "0 running" in panel.tasks.head.value, what="list settles")
            assert all(b.value == 1.0 and b.bar_style == "success" for b in bars)
            wait_for(lambda: not panel.tasks.ticking, what="the refresh stops when nothing runs")
            # no threads of its own: whatever started meanwhile is the client's poller, its HTTP workers and sender
            # (and the simulator's request handlers)
            started = {t.name for t in set(threading.enumerate()) - before
                       if not t.name.endswith("(process_request_thread)")}
            ours = ("imagen4-poller", "imagen4-http", "imagen4-sender", "imagen4-lease")
            assert all(name.startswith(ours) for name in started), started
        finally:
            panel.close()
            session.close()


def test_a_typed_seed_stays_until_changed(panel):
    panel.prompt.value = "seeded"
    seed = panel.new_seed()
    assert seed.isdigit() and panel.seed.value == seed
    panel.controls.random_seed.click()
    assert panel.seed.value.isdigit()
    panel.seed.value = "1234"
    rec = panel.submit(wait=True)
    assert rec["request"].seed == "1234" and panel.seed.value == "1234"  # it stays after Generate
    panel.prompt.value = "seeded, changed"
    rec2 = panel.submit(wait=True)
    assert rec2["request"].seed == "1234" and panel.seed.value == "1234"
    panel.seed.value = ""  # the user emptied it: a new random seed for each Generate, the box stays empty
    rec3 = panel.submit(wait=True)
    rec4 = panel.submit(wait=True)
    assert rec3["request"].seed.isdigit() and rec3["request"].seed != rec4["request"].seed
    assert panel.seed.value == ""


def test_double_click_on_generate_makes_one_task(panel, sim):
    panel.prompt.value = "one task only"
    first = panel.click_generate()
    panel.generate.click()  # the second click of a double click: ignored
    panel.generate.click()
    assert first is not None and len(panel.submissions) == 1
    wait_for(lambda: len(panel.gallery.grid.children) == 1, what="the image")
    assert sim.count("createTask") == 1
    time.sleep(DEBOUNCE + 0.05)
    panel.generate.click()  # a deliberate click later sends another task
    wait_for(lambda: sim.count("createTask") == 2, what="the second task")
    panel.prompt.value = "changed at once"
    panel.generate.click()  # changed controls are never a double click
    wait_for(lambda: sim.count("createTask") == 3, what="the third task")


def test_model_chooser_sends_the_model(panel, sim):
    import json

    assert panel.model.options == ("standard", "fast", "ultra") and panel.model.value == "standard"
    panel.prompt.value = "ultra fox"
    panel.num.value = "3"
    panel.model.value = "ultra"
    assert panel.num.value == "1"  # ultra makes one image
    # the counts ultra cannot take look disabled and say why on hover; picking one changes nothing
    assert "imagen4-max-1" in panel.num._dom_classes
    assert panel.num.tooltips[1:] == ("ultra makes at most 1 image a task",) * 3
    panel.num.value = "2"
    assert panel.num.value == "1" and not panel.generate.disabled
    panel.model.value = "fast"
    assert "imagen4-max-1" not in panel.num._dom_classes and panel.num.tooltips[3] == "4 images"
    panel.model.value = "ultra"
    rec = panel.submit(wait=True)
    assert rec["request"].model == "google/imagen4-ultra"
    (body,) = [json.loads(r.body) for r in sim.requests if r.endpoint == "createTask"]
    assert body["model"] == "google/imagen4-ultra"
    assert cell_code(rec["request"]).startswith("%%imagen4 -m ultra -a 1:1 -n 1 -s ")
    rec["job"].wait(10)
    wait_for(lambda: len(panel.gallery.grid.children) == 1, what="the image")
    caption = panel.gallery.grid.children[0].children[1].value
    assert "ultra · 1:1 · seed " in caption and "1/1" in caption
    panel.model.value = "fast"
    panel.reuse_settings(rec["request"])
    assert panel.model.value == "ultra"


def test_failure_shows_error_in_words(panel, sim):
    sim.next_outcomes.append({"fail": ("400", "prompt flagged by safety filter")})
    panel.prompt.value = "something refused"
    panel.generate.click()
    wait_for(lambda: "failed" in panel.tasks.text() or "error" in panel.tasks.text(), what="failure row")
    wait_for(lambda: "imagen4-err" in panel.tasks.text(), what="error words")
    assert "safety" in panel.tasks.text()
    (row,) = panel.tasks.list.children
    assert row.bar.bar_style == "danger" and "imagen4-s-fail" in row._dom_classes
    assert len(panel.gallery.grid.children) == 0


def test_unsent_submission_shows_why(make_client, tmp_path):
    session = Session(client=make_client(api_key="wrong-key-000000000"), history=History(tmp_path / "u.jsonl"))
    panel = Panel(session=session)
    try:
        panel.prompt.value = "never sent"
        rec = panel.submit(wait=True)
        assert rec["error"] is None and rec["job"].task_id is None and rec["job"].error is not None  # on the job
        wait_for(lambda: "not sent" in panel.tasks.text(), what="unsent row")
        assert "wrong-key" not in panel.tasks.text()
        assert [r["state"] for r in panel.task_rows()] == ["unsent"]
        assert [j.task_id for j in panel.jobs.values()] == [None] and panel.mine == set()  # no task made
    finally:
        panel.close()
        session.close()


def test_viewer_reuse_copy_seed_save(panel, sim, tmp_path):
    gallery = panel.gallery
    panel.prompt.value = "a {braced} cat"
    panel.negative.value = "blur"
    panel.ratio.value = "9:16"
    panel.seed.value = "77"
    panel.generate.click()
    wait_for(lambda: len(gallery.grid.children) == 1, what="image")
    # click the thumbnail (the transparent zoom button over it) -> larger view
    card = gallery.grid.children[0]
    zoom = card.children[0].children[1]
    assert "imagen4-zoom" in zoom._dom_classes
    zoom.click()
    assert gallery.viewer.layout.display == "flex" and gallery.big.value
    assert "seed <b>77</b>" in gallery.big_info.value
    # copy seed: puts it in the box and emits the clipboard script (from the package's copy.js)
    gallery.copy_seed.click()
    assert gallery.seed_copy.value == "77"
    js = panel.inserter.js_out.outputs[0]["data"]["application/javascript"]
    assert "clipboard" in js and '"text": "77"' in js
    # reuse these settings after changing the controls
    panel.prompt.value, panel.ratio.value, panel.seed.value, panel.negative.value = "other", "1:1", "", ""
    gallery.reuse.click()
    assert (panel.prompt.value, panel.negative.value, panel.ratio.value, panel.num.value, panel.seed.value) == (
        "a {braced} cat", "blur", "9:16", "1", "77")
    # the same seeded request again is served from the history: no new createTask; the task's own row says so
    # (a task id is listed once, and a reuse is no task)
    panel.generate.click()
    wait_for(lambda: len(panel.jobs) == 2, what="second job")
    wait_for(lambda: "reused 1×" in panel.tasks.text(), what="reused on the task's row")
    (first, _), (stored, _) = [(k, j) for k, j in panel.jobs.items()]
    assert stored == f"stored:{first}"
    assert sim.count("createTask") == 1
    assert len(panel.tasks.list.children) == 1 and panel.tasks.text().count(first) == 1
    assert "1 task" in panel.tasks.head.value and "1 result reused" in panel.tasks.head.value
    # save as
    target = tmp_path / "out" / "fox.png"
    gallery.save_path.value = str(target)
    gallery.save.click()
    original = panel.selected[1]
    saved = read_provenance(target)  # the copy says how it was made; the store's file is the service's bytes
    assert saved["task_id"] == first and saved["sha256"] == original.sha256 and saved["request"]["seed"] == "77"
    assert hashlib.sha256(original.path.read_bytes()).hexdigest() == original.sha256
    with Image.open(target) as copy, Image.open(original.path) as stored:
        assert copy.tobytes() == stored.tobytes()  # the pixels are not re-encoded
    assert "Saved to" in gallery.view_status.value
    gallery.save_path.value = str(tmp_path / "no" / "\x00bad")
    gallery.save.click()
    assert "Not saved" in gallery.view_status.value
    gallery.close_view.click()
    assert gallery.viewer.layout.display == "none"


def test_cell_code_round_trips_through_the_magic():
    from IPython.core.interactiveshell import InteractiveShell

    from imagen4_jupyter.notebook.magics import Imagen4Magics

    magics = Imagen4Magics(shell=InteractiveShell.instance())
    for req in [
        GenerationRequest.create("a {x} fox}} {{\nin snow", negative_prompt="blur {}", aspect_ratio="16:9",
                                 num_images=2, seed="42"),
        GenerationRequest.create("plain", aspect_ratio="9:16", num_images=4, seed="{s}"),
        GenerationRequest.create("json {\"a\": 1}", negative_prompt="x\ny", aspect_ratio="3:4", num_images=3),
    ]:
        assert code_problem(req) is None
        line, _, body = cell_code(req).partition("\n")
        assert line.startswith("%%imagen4 ")
        again, _args = magics.build_request(line.removeprefix("%%imagen4 "), body)
        assert again == req
    assert "seed" in code_problem(GenerationRequest.create("p", seed="a b"))
    assert "---" in code_problem(GenerationRequest.create("p\n---\nq"))


def test_cell_code():
    import imagen4_jupyter

    req = GenerationRequest.create("a {x} fox\nin snow", negative_prompt="blur {}", aspect_ratio="16:9",
                                   num_images=2, seed="42")
    assert cell_code(req) == "%%imagen4 -a 16:9 -n 2 -s 42\na {{x}} fox\nin snow\n---\nblur {{}}"
    assert cell_code(GenerationRequest.create("plain")) == "%%imagen4 -a 1:1 -n 1\nplain"
    assert imagen4_jupyter.cell_code is cell_code and imagen4_jupyter.Panel is Panel


def test_scripts_are_package_data():
    from importlib.resources import files

    from imagen4_jupyter.notebook.panel.insert import script

    folder = files("imagen4_jupyter.notebook.panel")
    for name, fn in (("insert", "imagen4Insert"), ("copy", "imagen4Copy")):
        source = folder.joinpath(f"{name}.js").read_text(encoding="utf-8")
        assert f"function {fn}(args)" in source
        js = script(name, "tok", code="a\nb")
        assert js.startswith(source) and js.rstrip().endswith(");") and '"token": "tok"' in js
        assert '"code": "a\\nb"' in js  # the arguments as JSON, never pasted into the source


def test_insert_as_code_uses_latest_task_and_reports(panel):
    ins = panel.inserter
    panel.prompt.value = "harbour"
    panel.ratio.value = "4:3"
    panel.num.value = "2"
    rec = panel.submit(wait=True)
    panel.prompt.value = "something else typed since"
    code = panel.insert_code()
    assert code == cell_code(rec["request"]) and code.startswith("%%imagen4 -a 4:3 -n 2 -s ")
    assert ins.code.value == code and ins.code.layout.display == "flex"
    js = ins.js_out.outputs[0]["data"]["application/javascript"]
    assert "notebook:insert-cell-below" in js and '"%%imagen4 -a 4:3 -n 2' in js
    # the browser reports through the hidden text box; a stale token is ignored
    ins.report.value = "not-the-token ok"
    assert "Inserted" not in ins.status.value
    ins.report.value = f"{ins.token} ok"
    assert "Inserted" in ins.status.value and ins.js_out.outputs == ()
    panel.insert_code()
    ins.report.value = f"{ins.token} fail: no toolbar"
    assert "Could not insert" in ins.status.value and "no toolbar" in ins.status.value


def test_insert_as_code_without_tasks_uses_the_controls_or_says_why(panel):
    assert panel.insert_code() is None
    assert "Nothing to insert" in panel.inserter.status.value and "prompt is empty" in panel.inserter.status.value
    panel.prompt.value = "typed, not sent"
    panel.seed.value = "5"
    assert panel.insert_code() == "%%imagen4 -a 1:1 -n 1 -s 5\ntyped, not sent"


def test_history_shows_magic_tasks_and_reuses_settings(panel, session):
    # a task submitted by another front-end (the magic) of the same session
    job = session.submit(GenerationRequest.create("from a cell", aspect_ratio="3:4", num_images=3, seed="9"),
                         source="magic")
    job.wait(10)
    wait_for(lambda: job.task_id in panel.tasks.text(), what="magic task in the task list")
    assert "cell" in panel.tasks.text()
    tab = panel.history_tab
    panel.tabs.selected_index = 1
    wait_for(lambda: job.task_id in tab.table.value and tab.table.value.count("<img") == 3,
             what="history table, 3 thumbnails")
    assert tab.pick.value == job.task_id and "magic" in tab.pick.label
    tab.reuse.click()
    assert (panel.prompt.value, panel.ratio.value, panel.num.value, panel.seed.value) == ("from a cell", "3:4",
                                                                                          "3", "9")
    tab.show.click()
    assert panel.tabs.selected_index == 0 and panel.selected[0].task_id == job.task_id
    assert len(panel.gallery.grid.children) == 3


def test_progress_and_the_schedules_estimate(session):
    from imagen4_jupyter.api.job import Job
    from imagen4_jupyter.api.schedules import SmartSchedule
    from imagen4_jupyter.notebook.panel.tasks import DEFAULT_GENERATION, expected_generation, progress

    job = Job("t1", GenerationRequest.create("p", aspect_ratio="16:9", num_images=2))
    schedule = SmartSchedule(margin=0.0)
    assert expected_generation(schedule, job) == DEFAULT_GENERATION  # nothing learned yet
    for seconds in (4.0, 5.0, 6.0):
        schedule.learn("16:9", 2, seconds)
    assert expected_generation(schedule, job) == pytest.approx(5.0, abs=0.6)  # the middle of its window
    assert expected_generation(object(), job) == DEFAULT_GENERATION  # a schedule that does not learn
    assert progress("queuing", False, None, 5.0) == 0.2
    assert progress("generating", False, 2.5, 5.0) == pytest.approx(0.625)
    assert progress("generating", False, 60.0, 5.0) == 0.95  # never full before it is done
    assert progress("error", True, None, 5.0) == 1.0


def test_close_stops_listening(session):
    p = Panel(session=session)
    p.close()
    job = session.submit(GenerationRequest.create("after close"), source="magic")
    job.wait(10)
    time.sleep(0.1)
    assert p.jobs == {} and p.task_rows() == []


def test_click_returns_at_once_while_create_task_is_slow(panel, sim):
    sim.inject("createTask", delay=1.0)
    panel.prompt.value = "slow service"
    t0 = time.monotonic()
    panel.generate.click()
    assert time.monotonic() - t0 < 0.3  # queued for the client's sender: the kernel stays free
    wait_for(lambda: "sending" in panel.tasks.text(), what="sending row")
    panel.prompt.value = "typed meanwhile"  # the controls keep working
    assert panel.controls.prompt_count.value.startswith("15 /")
    wait_for(lambda: len(panel.gallery.grid.children) == 1, what="image after the slow create")
    assert [r["state"] for r in panel.task_rows()] == ["success"]  # the sending row gave way to the task's
    assert panel.task_rows()[0]["origin"] == "panel"


def test_dropped_create_task_says_outcome_unknown(panel, sim):
    sim.inject("createTask", drop_after=True)
    panel.prompt.value = "maybe billed"
    rec = panel.submit(wait=True)
    assert rec["job"].task_id is None and type(rec["job"].error).__name__ == "OutcomeUnknownError"
    wait_for(lambda: [r["state"] for r in panel.task_rows()] == ["unknown"], what="unknown outcome row")
    assert "imagen4-s-unknown" in panel.tasks.list.children[0]._dom_classes
    assert "not sent" not in panel.tasks.text()
    assert sim.count("createTask") == 1  # never resent


def test_no_key_banner_turns_generate_off_and_offers_the_key_cell_and_the_simulator(monkeypatch, tmp_path):
    from imagen4_jupyter.api.credentials import forget_entered_key
    from imagen4_jupyter.notebook.service import simulator_command

    for name in ("APIKLEY_API_KEY", "APIKLEY_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    forget_entered_key()
    monkeypatch.chdir(tmp_path)
    session = Session(history=History(tmp_path / ".imagen4" / "nokey.jsonl"), notebook=str(tmp_path / "nk.ipynb"))
    panel = Panel(session=session)
    try:
        assert panel.banner.layout.display == "flex" and "No API key" in panel.banner.text.value
        assert "%imagen4 key" in panel.banner.text.value and "APIKLEY_API_KEY" in panel.banner.text.value
        panel.prompt.value = "a fox"
        assert panel.generate.disabled and "No API key" in panel.reason.value
        assert "Generate is off" in panel.reason.value
        assert panel.click_generate() is None and panel.task_rows() == []
        panel.banner.enter.click()  # inserts a `%imagen4 key` cell below (its masked prompt asks for the key)
        assert panel.inserter.code.value == "%imagen4 key"
        assert "imagen4Insert" in panel.inserter.js_out.outputs[0]["data"]["application/javascript"]
        panel.banner.simulate.click()  # %imagen4 simulator in this kernel
        assert session.simulated and "Simulator started" in panel.banner.status.value
        assert panel.banner.layout.display == "none" and not panel.generate.disabled and panel.reason.value == ""
        rec = panel.click_generate()
        assert rec is not None and rec["sent"].wait(10) and rec["job"] is not None
        rec["job"].wait(20)
        wait_for(lambda: "simulated" in panel.tasks.text() and "done" in panel.tasks.text(), timeout=20,
                 what="a simulated task, done")
    finally:
        panel.close()
        simulator_command(session, lambda *a, **k: None, stop=True)
        session.close()


def test_clear_hides_ended_rows_and_the_insert_notice_fades(panel, monkeypatch):
    import imagen4_jupyter.notebook.panel.insert as insert_module

    panel.prompt.value = "to be cleared"
    rec = panel.submit(wait=True)
    rec["job"].wait(10)
    wait_for(lambda: "done" in panel.tasks.text(), what="done")
    assert panel.tasks.clear_button.layout.display == "flex"
    panel.tasks.clear_button.click()
    assert panel.task_rows() == [] and panel.tasks.list.children == ()
    assert "1 cleared" in panel.tasks.head.value and rec["job"].task_id in panel.jobs  # still known
    # the "Inserted" notice and the code box go away a few seconds after the cell is in
    monkeypatch.setattr(insert_module, "FADE_AFTER", 0.2)
    ins = panel.inserter
    panel.insert_code()
    ins.report.value = f"{ins.token} ok"
    assert "Inserted the cell below" in ins.status.value
    wait_for(lambda: ins.status.value == "" and ins.code.layout.display == "none", what="the notice fades")


def test_cards_and_outputs_name_prompt_parameters_and_show_images_side_by_side(session):
    from imagen4_jupyter.api import cards as C
    from imagen4_jupyter.notebook.outputs import SHOWN_BOX, display_width, image_output

    job = session.submit(GenerationRequest.create("a <b>bold</b> heron", aspect_ratio="16:9", num_images=2,
                                                  seed="11"))
    job.wait(10)
    done = C.card_bundle(job)["text/html"]
    again = session.job_from_history(session.history.get(job.task_id), reused=True)
    reused = C.reused_bundle(again, job.created_at)
    for html in (done, reused["text/html"]):
        assert "16:9 · 2 images · seed 11" in html and "a &lt;b&gt;bold&lt;/b&gt; heron" in html
        assert "⏳" not in html and "♻" not in html and "#6b7280" not in html
        assert "var(--jp-ui-font-color1" in html and "title='a &lt;b&gt;bold" in html
    assert "Reused 2 images of task" in reused["text/plain"] and "16:9 · 2 images · seed 11" in reused["text/plain"]
    ultra = GenerationRequest.create("u", model="ultra")
    assert C.params_text(ultra) == "ultra · 1:1 · 1 image" and C.params_text(ultra.to_dict()).startswith("ultra ·")
    # each image stays a native output with its metadata, shown at most SHOWN_BOX (16:9: 480 wide)
    data, meta = image_output(job, job.images[0], "full")
    assert "image/png" in data and meta["imagen4"]["task_id"] == job.task_id
    assert meta["image/png"]["width"] == display_width(job.images[0].width, job.images[0].height)
    assert display_width(1408, 768) == 480 and display_width(1024, 1024) == SHOWN_BOX[1]
    assert display_width(768, 1408) == round(360 * 768 / 1408) and display_width(100, 100) == 100
    assert display_width(2048, 2048, embedded_width=300) == 300
