"""What a person sees in a cell's outputs, in a real browser (JupyterLab 4, headless Debian chromium): the done card
with two images side by side, the reused card, an error card and the history table, in the light and dark themes at
1400 and 800 px; text contrast measured from the page's computed styles. Screenshots land in test-artifacts/
(`outputs-<theme>-<width>.png`).
"""
from __future__ import annotations

import os
import time

import pytest
from conftest import KEY
from lab_util import (
    artifacts_on_failure,
    browser,
    browser_marks,
    lab_on_simulator,
    low_contrast,
    run_cell_done,
    set_theme,
    shot,
    wait_lab_kernel_idle,
    watch_console,
)

pytestmark = browser_marks(300)

PROMPT = ("a grey heron at dawn over a misty lake, long exposure, golden light on the reeds, "
          "a wooden jetty in the foreground and hills fading into the haze behind")
CELLS = [
    "%load_ext imagen4_jupyter\n%config Imagen4Magics.poll_interval = 0.05",
    f"%%imagen4 --wait -n 2 -a 16:9 -s 11\n{PROMPT}",
    f"%%imagen4 --wait -n 2 -a 16:9 -s 11\n{PROMPT}",  # the same seeded request: reused, nothing sent
    "%%imagen4 --wait -s 12\na request the service refuses",
    "%%imagen4 --wait -m ultra -s 5\na square ultra image",
    "%imagen4 history --limit 5",
]
OUTPUT_ROOTS = [".imagen4-card", ".imagen4-message", ".imagen4-history-wrap"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with lab_on_simulator(tmp_path_factory.mktemp("lab-out"), KEY, queue_time=(0.1, 0.2), generation_time=(0.3, 0.5),
                          image_scale=0.25) as server:
        yield server


def _cell(page, i):
    return page.locator(".jp-Notebook .jp-Cell").nth(i)


def _run(page, i):
    run_cell_done(page, i, timeout=60_000)


def test_cell_outputs_in_light_and_dark_at_1400_and_800(lab):
    lab.write_notebook("outputs.ipynb", CELLS)
    with browser() as chromium:
        context = chromium.new_context(viewport={"width": 1400, "height": 2600})
        page = context.new_page()
        page.set_default_timeout(30_000)
        console = watch_console(page)
        with artifacts_on_failure(page, "outputs", console):
            page.goto(lab.url(f"/lab/workspaces/o{os.getpid()}/tree/outputs.ipynb"))
            wait_lab_kernel_idle(page)
            page.keyboard.press("Escape")
            page.keyboard.press("Control+b")  # no file browser: at 800 px the notebook gets the window's width
            for i in range(3):
                _run(page, i)
            lab.sim.next_outcomes.append({"fail": ("400", "Your prompt was flagged by the safety filter")})
            for i in range(3, len(CELLS)):
                _run(page, i)
            _cell(page, 5).locator(".imagen4-history").wait_for()
            assert lab.sim.count("createTask") == 3  # the second cell reused the first's images

            # the done card: state, task id, parameters and prompt; its two images side by side, each <= 480 px
            done = _cell(page, 1)
            card = done.locator(".imagen4-card")
            text = card.inner_text()
            assert "done" in text and "16:9 · 2 images · seed 11" in text and PROMPT[:40] in text
            imgs = done.locator(".jp-OutputArea-output img")
            assert imgs.count() == 2
            page.wait_for_function("() => Array.from(document.querySelectorAll('.jp-Cell')[1]"
                                   ".querySelectorAll('.jp-OutputArea-output img')).every(i => i.complete)")
            a, b = imgs.nth(0).bounding_box(), imgs.nth(1).bounding_box()
            assert abs(a["y"] - b["y"]) < 2 and b["x"] >= a["x"] + a["width"], (a, b)
            assert a["width"] <= 481 and b["width"] <= 481
            # the prompt is one line ending in an ellipsis, whole on hover
            line = card.locator(".imagen4-card-prompt")
            assert line.get_attribute("title").startswith(PROMPT[:60])
            # the reused card names its prompt and parameters too; an ultra card its model
            reused = _cell(page, 2).locator(".imagen4-card").inner_text()
            assert "reused" in reused and "16:9 · 2 images · seed 11" in reused and PROMPT[:40] in reused
            assert "nothing sent" in reused or "no request sent" in reused
            assert "ultra · 1:1 · 1 image · seed 5" in _cell(page, 4).locator(".imagen4-card").inner_text()
            square = _cell(page, 4).locator(".jp-OutputArea-output img").bounding_box()
            assert square["width"] <= 361 and square["height"] <= 361  # one 1:1 image never fills the view
            assert "Generation failed" in _cell(page, 3).locator(".imagen4-card").inner_text() or \
                "safety" in _cell(page, 3).locator(".imagen4-card").inner_text()
            # no glyph that needs an emoji font
            body = page.locator(".jp-Notebook").inner_text()
            assert "⏳" not in body and "♻" not in body

            # the history table: plurals, the prompt widest and left-aligned, the task id monospace
            table = _cell(page, 5).locator(".imagen4-history-wrap")
            assert "3 tasks in" in table.inner_text()  # a reuse is no task
            widths = page.evaluate("""() => {
              const row = document.querySelector('.imagen4-history tbody tr');
              const cells = Array.from(row.children);
              return {prompt: cells[0].getBoundingClientRect().width, id: cells[3].getBoundingClientRect().width,
                      align: cells.map(c => getComputedStyle(c).textAlign), credits: cells[2].innerText,
                      font: getComputedStyle(cells[3].querySelector('.imagen4-tid')).fontFamily};
            }""")
            assert widths["prompt"] > 2 * widths["id"], widths
            assert widths["credits"].strip().lstrip("~").isdigit(), widths  # what the task cost (~: an estimate)
            assert set(widths["align"]) == {"left"} and "mono" in widths["font"].lower(), widths

            results = {}
            for theme in ("JupyterLab Light", "JupyterLab Dark"):
                if theme != "JupyterLab Light":
                    set_theme(page, theme)
                for width in (1400, 800):
                    page.set_viewport_size({"width": width, "height": 2600})
                    time.sleep(0.5)
                    name = f"outputs-{theme.split()[-1].lower()}-{width}"
                    _cell(page, 1).evaluate("c => c.scrollIntoView({block: 'start'})")
                    time.sleep(0.2)
                    shot(page, name)
                    checked, low = low_contrast(page, OUTPUT_ROOTS)
                    results[name] = (checked, low)
                    # nothing wider than the notebook; the history's prompt keeps its width, its cells never overlap
                    right = done.locator(".jp-OutputArea").bounding_box()
                    for k in range(2):
                        box = imgs.nth(k).bounding_box()
                        assert box["x"] + box["width"] <= right["x"] + right["width"] + 1, (name, box, right)
                    cells = page.evaluate("""() => Array.from(document.querySelector('.imagen4-history tbody tr')
                        .children).map(c => { const r = c.getBoundingClientRect();
                          return [r.left, r.right, c.scrollWidth <= c.clientWidth + 1]; })""")
                    spans = [c[1] - c[0] for c in cells]
                    assert spans[0] >= 118 and spans[0] == max(spans), (name, cells)  # the prompt is widest
                    assert all(c[2] for c in cells), (name, cells)  # no cell's text runs over its neighbour
                    wrap = table.bounding_box()
                    assert page.locator(".imagen4-history").bounding_box()["width"] <= wrap["width"] + 1, name
                    # a wrapped image lines up with the one above it (no stray indent)
                    boxes = [imgs.nth(k).bounding_box() for k in range(2)]
                    if boxes[1]["y"] > boxes[0]["y"] + 2:
                        assert abs(boxes[1]["x"] - boxes[0]["x"]) < 2, (name, boxes)
            set_theme(page, "JupyterLab Light")  # the theme is a server setting
            assert all(checked >= 20 for checked, _low in results.values()), results
            assert not [(name, low) for name, (_checked, low) in results.items() if low], results
        context.close()
