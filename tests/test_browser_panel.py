"""The panel in a real browser: JupyterLab 4 (and Notebook 7) on loopback, wired to the simulator, headless chromium.

Set IMAGEN4_SAVE_DOCS_SCREENSHOT=1 to also write docs/panel.png (the README's screenshot, from
`test_panel_in_light_and_dark_at_1400_and_800`).
"""
from __future__ import annotations

import json
import os
import re
import time

import pytest
from conftest import KEY
from lab_util import (
    ARTIFACTS,
    ROOT,
    LabServer,
    artifacts_on_failure,
    browser,
    browser_marks,
    low_contrast,
    run_cell,
    set_theme,
    shot,
    truncated_labels,
    wait_lab_kernel_idle,
    wait_nb7_kernel_idle,
    watch_console,
)

from imagen4_jupyter.simulator import Simulator

pytestmark = browser_marks(240)

SETUP = "%load_ext imagen4_jupyter\n%config Imagen4Magics.poll_interval = 0.05"
PROMPT = "a lighthouse at dusk, {watercolor}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Simulator(api_keys=(KEY,), queue_time=(0.2, 0.4), generation_time=(0.8, 1.2), image_scale=0.25) as sim:
        server = LabServer(tmp_path_factory.mktemp("lab"), {"APIKLEY_BASE_URL": sim.url, "APIKLEY_API_KEY": KEY})
        server.sim = sim
        started = time.monotonic()
        server.start()
        server.start_seconds = time.monotonic() - started
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def chromium():
    with browser() as b:
        yield b


def _page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    return context, page


def _cell_texts(page) -> list[str]:
    return page.eval_on_selector_all(
        ".jp-Notebook .jp-Cell", "cells => cells.map(c => { const e = c.querySelector('.cm-content');"
        " return e ? Array.from(e.querySelectorAll('.cm-line')).map(l => l.textContent).join('\\n') : ''; })")


def _panel_cell_index(page) -> int:
    return page.eval_on_selector_all(
        ".jp-Notebook .jp-Cell", "cells => cells.findIndex(c => !!c.querySelector('.imagen4-panel'))")


# the contrast (WCAG ratio) of the first element matching each selector against its first opaque background;
# returns those under 4.5 as "selector ratio"
CONTRAST_JS = """(selectors) => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = ([r, g, b]) => {
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const low = [];
  for (const sel of selectors) {
    const el = document.querySelector(sel);
    if (!el) { low.push(sel + ' missing'); continue; }
    let bg = null;
    for (let n = el; n && !bg; n = n.parentElement) {
      const c = rgb(getComputedStyle(n).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) bg = c.slice(0, 3);
    }
    const fg = rgb(getComputedStyle(el).color);
    const alpha = fg.length === 4 ? fg[3] : 1;
    const mixed = fg.slice(0, 3).map((v, i) => v * alpha + (bg || [255, 255, 255])[i] * (1 - alpha));
    const [a, b] = [lum(mixed), lum(bg || [255, 255, 255])].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    if (ratio < 4.5) low.push(sel + ' ' + ratio.toFixed(2));
  }
  return low;
}"""


def _history_requests(lab, stem: str) -> list[dict]:
    path = lab.root / ".imagen4" / f"{stem}.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e["request"] for e in events if e["event"] == "submitted"]


def _history_task_ids(lab, stem: str) -> list[str]:
    path = lab.root / ".imagen4" / f"{stem}.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e["task_id"] for e in events if e["event"] == "submitted"]


def test_panel_in_jupyterlab(lab, chromium):
    lab.write_notebook("panel.ipynb", [SETUP, "%imagen4 panel"])
    context, page = _page(chromium)
    console = watch_console(page)
    with artifacts_on_failure(page, "lab-panel", console):
        t0 = time.monotonic()
        page.goto(lab.url(f"/lab/workspaces/w{os.getpid()}a/tree/panel.ipynb"))
        wait_lab_kernel_idle(page)
        t_idle = time.monotonic() - t0
        run_cell(page, 0)
        page.wait_for_function("() => document.querySelectorAll('.jp-Cell')[0]"
                               ".querySelector('.jp-InputPrompt').textContent.includes('[1]')")
        run_cell(page, 1)
        panel = page.locator(".imagen4-panel")
        panel.wait_for()
        assert _panel_cell_index(page) == 1

        generate = page.locator(".imagen4-generate")
        assert generate.is_disabled()  # empty prompt: a neutral hint until something is typed
        assert "Describe the image" in page.locator(".imagen4-reason").inner_text()
        assert "empty" not in page.locator(".imagen4-reason").inner_text()
        page.locator(".imagen4-prompt textarea").fill(PROMPT)
        page.wait_for_function("() => !document.querySelector('.imagen4-generate').disabled")
        assert page.locator(".imagen4-count").first.inner_text() == f"{len(PROMPT)} / 5000"
        page.locator(".imagen4-ratio button", has_text="16:9").click()
        page.locator(".imagen4-num button", has_text=re.compile(r"^2$")).click()
        # the kernel has the values before Generate is clicked (each is a comm message)
        page.wait_for_function("() => document.querySelector('.imagen4-ratio button.mod-active')"
                               "?.textContent.includes('16:9')")
        t1 = time.monotonic()
        generate.click()
        # while the task runs the kernel is idle: nothing blocks it (the status bar says so)
        page.wait_for_function(
            "() => /(queued|generating|waiting|sent)/.test(document.querySelector('.imagen4-tasks').textContent)"
            " && /\\|\\s*Idle/.test(document.querySelector('#jp-main-statusbar').textContent)")
        page.wait_for_function("() => document.querySelectorAll('.imagen4-gallery img.imagen4-thumb').length === 2"
                               " && Array.from(document.querySelectorAll('.imagen4-gallery img'))"
                               ".every(i => i.complete && i.naturalWidth > 0)")
        t_images = time.monotonic() - t1
        assert "done" in page.locator(".imagen4-tasks").inner_text()
        assert lab.sim.count("createTask") == 1

        # Insert as code: a new cell right below the panel's cell holds the equivalent %%imagen4 cell
        page.locator(".imagen4-insert").click()
        page.locator(".imagen4-insert-status", has_text="Inserted").wait_for()
        code = page.locator(".imagen4-code textarea").input_value()
        (request,) = _history_requests(lab, "panel")
        assert request["aspect_ratio"] == "16:9" and request["num_images"] == 2 and request["prompt"] == PROMPT
        expected = f"%%imagen4 -a 16:9 -n 2 -s {request['seed']}\na lighthouse at dusk, {{{{watercolor}}}}"
        assert code == expected
        texts = _cell_texts(page)
        assert len(texts) >= 3 and texts[2] == expected, texts

        # the inserted cell is in the saved notebook too, right below the panel's cell
        page.keyboard.press("Escape")
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 10
        while True:
            saved = json.loads((lab.root / "panel.ipynb").read_text())
            sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                       for c in saved["cells"]]
            if len(sources) >= 3 and sources[2] == expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sources[2] == expected and saved["cells"][2]["cell_type"] == "code", sources

        # run the inserted cell: the magic reuses the stored images (same seeded request, nothing sent)
        run_cell(page, 2)
        page.locator(".jp-Cell").nth(2).locator(".jp-OutputArea-output img").first.wait_for()
        time.sleep(0.3)
        assert lab.sim.count("createTask") == 1

        # the panel's task is in the magic's history listing (one session, one history)
        page.keyboard.press("Escape")
        cells_before = page.locator(".jp-Notebook .jp-Cell").count()
        page.locator(".jp-Notebook .jp-Cell").nth(cells_before - 1).locator(".jp-InputPrompt").click()
        page.keyboard.press("Enter")
        page.keyboard.type("%imagen4 history --limit 5")
        page.keyboard.press("Shift+Enter")
        listing = page.locator(".jp-Notebook .jp-Cell").nth(cells_before - 1).locator(".jp-OutputArea")
        listing.get_by_text(job_id := _history_task_ids(lab, "panel")[0]).first.wait_for()
        assert job_id in listing.inner_text()

        # larger view of the first image, for the screenshots
        page.locator(".imagen4-zoom").first.click()
        page.locator(".imagen4-viewer img").wait_for()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "lab-panel.png"))
        # the whole panel: a viewport tall enough to hold it, then a clip (JupyterLab scrolls inside the page)
        page.set_viewport_size({"width": 1100, "height": 2000})
        page.keyboard.press("Escape")
        page.keyboard.press("Control+b")  # hide the file browser: the notebook gets the width
        page.locator(".jp-Cell").nth(1).evaluate("c => c.scrollIntoView({block: 'start'})")
        time.sleep(0.3)
        box = panel.bounding_box()
        clip = {"x": box["x"] - 8, "y": box["y"] - 8, "width": box["width"] + 16, "height": box["height"] + 16}
        page.screenshot(path=str(ARTIFACTS / "lab-panel-widget.png"), clip=clip)

        # the history tab: the `%imagen4 history` table, with a picker for Reuse settings and Show
        page.locator(".imagen4-tabs .lm-TabBar-tab", has_text="History").click()
        table = page.locator(".imagen4-history-table table")
        table.wait_for()
        assert job_id in table.inner_text() and job_id in page.locator(".imagen4-history-pick select").input_value()
        page.wait_for_function("() => { const im = document.querySelectorAll('.imagen4-history-table img');"
                               " return im.length === 2 && Array.from(im).every(i => i.complete && i.naturalWidth); }")
        page.locator(".imagen4-prompt textarea").fill("something else")
        page.locator(".imagen4-history-reuse").click()
        page.wait_for_function(f"() => document.querySelector('.imagen4-prompt textarea').value === {PROMPT!r}")
        time.sleep(0.3)
        box = panel.bounding_box()
        clip = {"x": box["x"] - 8, "y": box["y"] - 8, "width": box["width"] + 16, "height": box["height"] + 16}
        page.screenshot(path=str(ARTIFACTS / "lab-panel-history.png"), clip=clip)

        # the dark theme: the same panel, readable (theme colours, no light-only backgrounds)
        set_theme(page, "JupyterLab Dark")
        page.locator(".jp-Cell").nth(1).evaluate("c => c.scrollIntoView({block: 'start'})")
        time.sleep(0.3)
        box = panel.bounding_box()
        clip = {"x": box["x"] - 8, "y": box["y"] - 8, "width": box["width"] + 16, "height": box["height"] + 16}
        page.screenshot(path=str(ARTIFACTS / "lab-panel-history-dark.png"), clip=clip)
        low = page.evaluate(CONTRAST_JS, [".imagen4-history-table td", ".imagen4-task-info .imagen4-tid",
                                          ".imagen4-tasks-head", ".imagen4-count", ".imagen4-history-pick select"])
        page.locator(".imagen4-tabs .lm-TabBar-tab", has_text="Gallery").click()
        time.sleep(0.3)
        box = panel.bounding_box()
        clip = {"x": box["x"] - 8, "y": box["y"] - 8, "width": box["width"] + 16, "height": box["height"] + 16}
        page.screenshot(path=str(ARTIFACTS / "lab-panel-widget-dark.png"), clip=clip)
        low += page.evaluate(CONTRAST_JS, [".imagen4-big-info code", ".imagen4-caption", ".imagen4-badge"])
        set_theme(page, "JupyterLab Light")  # the theme is a server setting: the next test starts light again
        assert not low, low

        errors = [m for m in console if m.startswith(("error", "pageerror")) and "imagen4" in m.lower()]
        assert not errors, errors
        print(f"\nlab start {lab.start_seconds:.1f} s, page to idle kernel {t_idle:.1f} s, "
              f"Generate to 2 images {t_images:.1f} s")
    context.close()


def test_panel_in_notebook7(lab, chromium):
    lab.write_notebook("panel7.ipynb", [SETUP, "%imagen4 panel"])
    context, page = _page(chromium)
    console = watch_console(page)
    with artifacts_on_failure(page, "nb7-panel", console):
        page.goto(lab.url("/notebooks/panel7.ipynb"))
        page.locator(".jp-Notebook .jp-Cell").first.wait_for()
        wait_nb7_kernel_idle(page)
        time.sleep(0.5)  # the indicator can say idle before the kernel websocket is usable
        run_cell(page, 0)
        page.wait_for_function("() => document.querySelectorAll('.jp-Cell')[0]"
                               ".querySelector('.jp-InputPrompt').textContent.includes('[1]')")
        run_cell(page, 1)
        page.locator(".imagen4-panel").wait_for()
        page.locator(".imagen4-prompt textarea").fill("a small red boat")
        page.locator(".imagen4-ratio button", has_text="9:16").click()
        page.wait_for_function("() => !document.querySelector('.imagen4-generate').disabled")
        page.locator(".imagen4-generate").click()
        page.wait_for_function("() => document.querySelectorAll('.imagen4-gallery img.imagen4-thumb').length === 1")
        page.locator(".imagen4-insert").click()
        page.locator(".imagen4-insert-status", has_text="Inserted").wait_for()
        code = page.locator(".imagen4-code textarea").input_value()
        assert code.startswith("%%imagen4 -a 9:16 -n 1 -s ") and code.endswith("\na small red boat")
        texts = _cell_texts(page)
        assert _panel_cell_index(page) == 1 and texts[2] == code, texts
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "nb7-panel.png"), full_page=True)
    context.close()


PANEL_ROOTS = [".imagen4-panel"]


def test_panel_in_light_and_dark_at_1400_and_800(lab, chromium):
    """Screenshots (`panel-<theme>-<width>.png`), no button label cut short at 800 px, text contrast of the whole
    panel at least 4.5:1, and a double click on Generate makes one task."""
    lab.write_notebook("panel-look.ipynb", [SETUP, "%imagen4 panel"])
    context = chromium.new_context(viewport={"width": 1400, "height": 1800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    console = watch_console(page)
    with artifacts_on_failure(page, "panel-look", console):
        page.goto(lab.url(f"/lab/workspaces/w{os.getpid()}c/tree/panel-look.ipynb"))
        wait_lab_kernel_idle(page)
        page.keyboard.press("Escape")
        page.keyboard.press("Control+b")  # no file browser: the notebook gets the window's width
        run_cell(page, 0)
        page.wait_for_function("() => document.querySelectorAll('.jp-Cell')[0]"
                               ".querySelector('.jp-InputPrompt').textContent.includes('[1]')")
        run_cell(page, 1)
        panel = page.locator(".imagen4-panel")
        panel.wait_for()
        before = lab.sim.count("createTask")
        page.locator(".imagen4-prompt textarea").fill("a harbour at night, lanterns on the water, " * 3)
        page.locator(".imagen4-ratio button", has_text="16:9").click()
        page.locator(".imagen4-num button", has_text=re.compile(r"^2$")).click()
        page.locator(".imagen4-seed input").fill("11")
        page.wait_for_function("() => !document.querySelector('.imagen4-generate').disabled"
                               " && document.querySelector('.imagen4-ratio button.mod-active')"
                               "?.textContent.includes('16:9')")
        time.sleep(0.3)  # the seed's comm message reaches the kernel
        page.locator(".imagen4-generate").dblclick()
        page.wait_for_function("() => document.querySelectorAll('.imagen4-gallery img.imagen4-thumb').length === 2"
                               " && Array.from(document.querySelectorAll('.imagen4-gallery img'))"
                               ".every(i => i.complete && i.naturalWidth > 0)")
        time.sleep(1.0)  # a second task would have been created by now
        assert lab.sim.count("createTask") == before + 1  # a double click makes one task
        assert page.locator(".imagen4-seed input").input_value() == "11"  # a typed seed stays
        # the same seeded request again: reused, shown on the task's own row (no second row, no own line)
        time.sleep(1.1)
        page.locator(".imagen4-generate").click()
        page.locator(".imagen4-tasks", has_text="reused 1×").wait_for()
        assert page.locator(".imagen4-task").count() == 1
        assert lab.sim.count("createTask") == before + 1
        page.locator(".imagen4-zoom").first.click()
        page.locator(".imagen4-viewer img").wait_for()
        assert page.locator(".imagen4-tile.imagen4-selected").count() == 1
        captions = page.locator(".imagen4-caption").all_inner_texts()
        assert sorted(captions) == ["standard · 16:9 · seed 11 · 1/2", "standard · 16:9 · seed 11 · 2/2"], captions
        results = {}
        for theme in ("JupyterLab Light", "JupyterLab Dark"):
            if theme != "JupyterLab Light":
                set_theme(page, theme)
            for width in (1400, 800):
                page.set_viewport_size({"width": width, "height": 1800})
                time.sleep(0.5)
                page.locator(".jp-Cell").nth(1).evaluate("c => c.scrollIntoView({block: 'start'})")
                time.sleep(0.3)
                name = f"panel-{theme.split()[-1].lower()}-{width}"
                shot(page, name, panel)
                results[name] = low_contrast(page, PANEL_ROOTS)
                if width == 800:
                    cut = truncated_labels(page)
                    assert not cut, (name, cut)
        set_theme(page, "JupyterLab Light")  # the theme is a server setting
        if os.environ.get("IMAGEN4_SAVE_DOCS_SCREENSHOT"):
            page.set_viewport_size({"width": 1100, "height": 1800})
            time.sleep(0.5)
            page.locator(".jp-Cell").nth(1).evaluate("c => c.scrollIntoView({block: 'start'})")
            time.sleep(0.3)
            (ROOT / "docs").mkdir(exist_ok=True)
            box = panel.bounding_box()
            page.screenshot(path=str(ROOT / "docs" / "panel.png"),
                            clip={"x": box["x"] - 8, "y": box["y"] - 8, "width": box["width"] + 16,
                                  "height": box["height"] + 16})
        assert all(checked >= 20 for checked, _low in results.values()), results
        assert not [(name, low) for name, (_checked, low) in results.items() if low], results
    context.close()
