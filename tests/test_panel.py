"""The widget panel at the Python level: set values, click, observe state, against the simulator."""
from __future__ import annotations

import sys
import time

import pytest

from imagen4_jupyter.api.request import MAX_PROMPT, GenerationRequest
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session

pytest.importorskip("ipywidgets")

from imagen4_jupyter.notebook.panel import Panel, cell_code, code_problem  # noqa: E402


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
    assert "prompt is empty" in panel.reason.value
    panel.prompt.value = "a red fox"
    assert not panel.generate.disabled and panel.reason.value == ""
    assert panel.prompt_count.value == f"9 / {MAX_PROMPT}"
    panel.prompt.value = "x" * (MAX_PROMPT + 3)
    assert panel.generate.disabled
    assert "limit is 5000" in panel.reason.value and "Shorten it by 3" in panel.reason.value
    assert "imagen4-over" in panel.prompt_count._dom_classes
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
    assert panel.seed.value == ""  # "keep" is off: the next Generate gets a new seed
    wait_for(lambda: len(panel.grid.children) == 2, what="2 images in the gallery")
    assert sim.count("createTask") == 1
    job = next(iter(panel.jobs.values()))
    assert job.request.aspect_ratio == "16:9" and job.request.num_images == 2
    assert job.request.seed and job.request.seed.isdigit()  # a random seed was chosen and sent
    assert job.task_id in panel.mine
    for card in panel.grid.children:
        thumb = card.children[0].children[0]
        assert "imagen4-thumb" in thumb._dom_classes and thumb.value[:4] == b"\x89PNG"
    wait_for(lambda: "done" in panel.tasks_html.value, what="task row done")
    assert job.task_id in panel.tasks_html.value
    # the task is in the session's history with the panel as its source
    entry = session.history.get(job.task_id)
    assert entry.state == "success" and entry.source == "panel" and entry.request["aspect_ratio"] == "16:9"
    # history tab shows it, searchable
    panel.tabs.selected_index = 1  # drawn by the refresher thread, not in the click
    wait_for(lambda: any(job.task_id in getattr(row.children[1], "value", "")
                         for row in panel.history_list.children if row.children), what="history row")
    assert "panel" in panel.history_list.children[0].children[1].value  # the source
    panel.history_search.value = "LIGHTHOUSE"
    wait_for(lambda: len(panel.history_list.children) == 1 and panel.history_list.children[0].children,
             what="one match")
    panel.history_search.value = "no such thing"
    wait_for(lambda: "No task matches" in getattr(panel.history_list.children[0], "value", ""), what="no match")


def test_queue_several_while_running(make_client, tmp_path):
    from conftest import KEY

    from imagen4_jupyter.simulator import Simulator

    with Simulator(api_keys=(KEY,), queue_time=(0.2, 0.3), generation_time=(0.6, 0.8), image_scale=0.0625) as slow:
        session = Session(client=make_client(base_url=slow.url), history=History(tmp_path / "q.jsonl"))
        panel = Panel(session=session)
        try:
            panel.prompt.value = "tile"
            for _ in range(3):
                assert not panel.generate.disabled
                panel.generate.click()
            wait_for(lambda: len(panel.jobs) == 3, what="3 tasks created")
            rows = panel.task_rows()
            assert sum(r["state"] not in ("success", "fail", "error") for r in rows) >= 2  # running together
            assert len({j.request.seed for j in panel.jobs.values()}) == 3
            time.sleep(0.3)
            assert "running" in panel.tasks_html.value and "imagen4-bar" in panel.tasks_html.value
            wait_for(lambda: len(panel.grid.children) == 3, timeout=20, what="3 images")
            assert slow.count("createTask") == 3
            wait_for(lambda: "0 running" in panel.tasks_html.value, what="list settles")
            wait_for(lambda: panel._thread is None, what="refresher stops when nothing runs")
        finally:
            panel.close()
            session.close()


def test_seed_random_and_keep(panel):
    panel.prompt.value = "seeded"
    seed = panel.new_seed()
    assert seed.isdigit() and panel.seed.value == seed
    panel.random_seed.click()
    assert panel.seed.value.isdigit()
    panel.seed.value = "1234"
    panel.keep.value = True
    rec = panel.submit(wait=True)
    assert rec["request"].seed == "1234" and panel.seed.value == "1234"
    panel.prompt.value = "seeded, changed"
    rec2 = panel.submit(wait=True)
    assert rec2["request"].seed == "1234"
    panel.keep.value = False
    rec3 = panel.submit(wait=True)
    assert rec3["request"].seed == "1234" and panel.seed.value == ""


def test_failure_shows_error_in_words(panel, sim):
    sim.next_outcomes.append({"fail": ("400", "prompt flagged by safety filter")})
    panel.prompt.value = "something refused"
    panel.generate.click()
    wait_for(lambda: "failed" in panel.tasks_html.value or "error" in panel.tasks_html.value, what="failure row")
    wait_for(lambda: "imagen4-err" in panel.tasks_html.value, what="error words")
    assert "safety" in panel.tasks_html.value
    assert len(panel.grid.children) == 0


def test_unsent_submission_shows_why(make_client, tmp_path):
    session = Session(client=make_client(api_key="wrong-key-000000000"), history=History(tmp_path / "u.jsonl"))
    panel = Panel(session=session)
    try:
        panel.prompt.value = "never sent"
        rec = panel.submit(wait=True)
        assert rec["error"] is not None and rec["job"] is None
        wait_for(lambda: "not sent" in panel.tasks_html.value, what="unsent row")
        assert "wrong-key" not in panel.tasks_html.value
    finally:
        panel.close()
        session.close()


def test_viewer_reuse_copy_seed_save(panel, sim, tmp_path):
    panel.prompt.value = "a {braced} cat"
    panel.negative.value = "blur"
    panel.ratio.value = "9:16"
    panel.seed.value = "77"
    panel.generate.click()
    wait_for(lambda: len(panel.grid.children) == 1, what="image")
    # click the thumbnail (the transparent zoom button over it) -> larger view
    card = panel.grid.children[0]
    zoom = card.children[0].children[1]
    assert "imagen4-zoom" in zoom._dom_classes
    zoom.click()
    assert panel.viewer.layout.display == "flex" and panel.big.value
    assert "seed <b>77</b>" in panel.big_info.value
    # copy seed: puts it in the box and emits the clipboard script
    panel.copy_seed.click()
    assert panel.seed_copy.value == "77"
    assert "clipboard" in panel.js_out.outputs[0]["data"]["application/javascript"]
    # reuse these settings after changing the controls
    panel.prompt.value, panel.ratio.value, panel.seed.value, panel.negative.value = "other", "1:1", "", ""
    panel.reuse.click()
    assert (panel.prompt.value, panel.negative.value, panel.ratio.value, panel.num.value, panel.seed.value) == (
        "a {braced} cat", "blur", "9:16", "1", "77")
    # the same seeded request again is served from the history: no new createTask
    panel.generate.click()
    wait_for(lambda: len(panel.jobs) == 2, what="second job")
    wait_for(lambda: "stored" in panel.tasks_html.value, what="reused row")
    assert sim.count("createTask") == 1
    # save as
    target = tmp_path / "out" / "fox.png"
    panel.save_path.value = str(target)
    panel.save.click()
    assert target.read_bytes() == panel.selected[1].data
    assert "Saved to" in panel.view_status.value
    panel.save_path.value = str(tmp_path / "no" / "\x00bad")
    panel.save.click()
    assert "Not saved" in panel.view_status.value
    panel.close_view.click()
    assert panel.viewer.layout.display == "none"


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
    req = GenerationRequest.create("a {x} fox\nin snow", negative_prompt="blur {}", aspect_ratio="16:9",
                                   num_images=2, seed="42")
    assert cell_code(req) == "%%imagen4 -a 16:9 -n 2 -s 42\na {{x}} fox\nin snow\n---\nblur {{}}"
    assert cell_code(GenerationRequest.create("plain")) == "%%imagen4 -a 1:1 -n 1\nplain"


def test_insert_as_code_uses_latest_task_and_reports(panel):
    panel.prompt.value = "harbour"
    panel.ratio.value = "4:3"
    panel.num.value = "2"
    rec = panel.submit(wait=True)
    panel.prompt.value = "something else typed since"
    code = panel.insert_code()
    assert code == cell_code(rec["request"]) and code.startswith("%%imagen4 -a 4:3 -n 2 -s ")
    assert panel.code.value == code and panel.code.layout.display == "flex"
    js = panel.js_out.outputs[0]["data"]["application/javascript"]
    assert "notebook:insert-cell-below" in js and '"%%imagen4 -a 4:3 -n 2' in js
    # the browser reports through the hidden text box; a stale token is ignored
    panel.insert_report.value = "not-the-token ok"
    assert "Inserted" not in panel.insert_status.value
    panel.insert_report.value = f"{panel._insert_token} ok"
    assert "Inserted" in panel.insert_status.value and panel.js_out.outputs == ()
    panel.insert_code()
    panel.insert_report.value = f"{panel._insert_token} fail: no toolbar"
    assert "Could not insert" in panel.insert_status.value and "no toolbar" in panel.insert_status.value


def test_history_shows_magic_tasks_and_reuses_settings(panel, session):
    # a task submitted by another front-end (the magic) of the same session
    job = session.submit(GenerationRequest.create("from a cell", aspect_ratio="3:4", num_images=3, seed="9"),
                         source="magic")
    job.wait(10)
    wait_for(lambda: job.task_id in panel.tasks_html.value, what="magic task in the task list")
    assert "cell" in panel.tasks_html.value
    panel.tabs.selected_index = 1

    def row():
        rows = [r for r in panel.history_list.children if getattr(r, "children", ())]
        return next((r for r in rows if job.task_id in r.children[1].value), None)

    wait_for(lambda: row() is not None and len(row().children[0].children) == 3, what="history row, 3 thumbnails")
    row = row()
    reuse = row.children[2].children[0]
    reuse.click()
    assert (panel.prompt.value, panel.ratio.value, panel.num.value, panel.seed.value) == ("from a cell", "3:4",
                                                                                          "3", "9")
    show = row.children[2].children[1]
    show.click()
    assert panel.tabs.selected_index == 0 and panel.selected[0].task_id == job.task_id


def test_close_unsubscribes(session):
    p = Panel(session=session)
    p.close()
    assert p._on_job not in session._listeners


def test_click_returns_at_once_while_create_task_is_slow(panel, sim):
    sim.inject("createTask", delay=1.0)
    panel.prompt.value = "slow service"
    t0 = time.monotonic()
    panel.generate.click()
    assert time.monotonic() - t0 < 0.3  # sent from a background thread: the kernel stays free
    wait_for(lambda: "sending" in panel.tasks_html.value, what="sending row")
    panel.prompt.value = "typed meanwhile"  # the controls keep working
    assert panel.prompt_count.value.startswith("15 /")
    wait_for(lambda: len(panel.grid.children) == 1, what="image after the slow create")


def test_dropped_create_task_says_outcome_unknown(panel, sim):
    sim.inject("createTask", drop_after=True)
    panel.prompt.value = "maybe billed"
    rec = panel.submit(wait=True)
    assert rec["job"] is None and type(rec["error"]).__name__ == "OutcomeUnknownError"
    wait_for(lambda: "imagen4-s-unknown" in panel.tasks_html.value, what="unknown outcome row")
    assert "not sent" not in panel.tasks_html.value
    assert sim.count("createTask") == 1  # never resent
