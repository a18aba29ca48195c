"""The panel's stylesheet (a hidden HTML widget holds it). Colours come from JupyterLab's theme variables, with
light fallbacks, so the panel reads well in light and dark themes."""
from __future__ import annotations

from ...api.request import ASPECT_RATIOS

# the drawn shape of each ratio (width, height in px), shown before the label of its toggle button
RATIO_SHAPES = {"1:1": (13, 13), "16:9": (20, 11), "9:16": (9, 16), "3:4": (12, 16), "4:3": (16, 12)}

RULES = [
    ".imagen4-panel { max-width: 980px; }",
    ".imagen4-ratio .widget-toggle-button { display:inline-flex; align-items:center; gap:6px; vertical-align: top; }",
    ".imagen4-ratio .widget-toggle-button::before { content:''; display:inline-block; box-sizing:border-box;"
    " border:2px solid currentColor; border-radius:2px; }",
    ".imagen4-count { font-size: 11px; color: var(--jp-ui-font-color2, #666); text-align: right; }",
    ".imagen4-count.imagen4-over { color: var(--jp-error-color1, #c00); font-weight: bold; }",
    ".imagen4-reason { color: var(--jp-error-color1, #c00); }",
    ".imagen4-row { gap: 8px; }",
    # the task list: one row of widgets per task (state and time, a FloatProgress, what it is)
    ".imagen4-tasks .widget-html-content { line-height: 18px; }",
    ".imagen4-task { align-items:center; gap:0 8px; padding:2px 0; font-size:12px; }",
    ".imagen4-task > * { margin-top:0; margin-bottom:0; }",
    ".imagen4-task-state { flex:none; }",
    ".imagen4-task-state .widget-html-content { display:flex; gap:8px; align-items:center; white-space:nowrap; }",
    ".imagen4-task-state .imagen4-elapsed { min-width: 40px; }",
    ".imagen4-task-info { flex: 1 1 300px; min-width: 0; }",
    ".imagen4-task-info .widget-html-content { display:flex; flex-wrap:wrap; gap:0 8px; align-items:center; }",
    ".imagen4-task-info .widget-html-content > span { white-space: nowrap; }",
    ".imagen4-task .imagen4-badge { display:inline-block; min-width:72px; padding:0 6px; border-radius:8px;"
    " text-align:center; background: var(--jp-layout-color2, #eee); color: var(--jp-ui-font-color1, #222); }",
    ".imagen4-task.imagen4-s-success .imagen4-badge { background:#d6f5d6; color:#145214; }",
    ".imagen4-task.imagen4-s-fail .imagen4-badge, .imagen4-task.imagen4-s-error .imagen4-badge,"
    " .imagen4-task.imagen4-s-unsent .imagen4-badge, .imagen4-task.imagen4-s-unknown .imagen4-badge"
    " { background:#fadbd8; color:#7b1d12; }",
    ".imagen4-bar.widget-progress { height: 18px; flex: none; margin: 0; }",
    ".imagen4-bar .progress { height: 6px; margin: 0; align-self: center; border-radius: 3px; overflow: hidden;"
    " background: var(--jp-layout-color3, #ddd); }",
    ".imagen4-task .imagen4-err { color: var(--jp-error-color1, #c00); }",
    ".imagen4-prompt-text { overflow:hidden; text-overflow:ellipsis; white-space:nowrap; max-width: 420px;"
    " color: var(--jp-ui-font-color2, #555); }",
    # the gallery and the larger view
    ".imagen4-big-info small { word-break: break-all; }",
    ".imagen4-thumb-box { position: relative; }",
    ".imagen4-thumb-box .imagen4-zoom { position:absolute; top:0; left:0; width:100%; height:100%; opacity:0;"
    " margin:0; cursor: zoom-in; }",
    ".imagen4-card img { object-fit: contain; background: var(--jp-layout-color2, #f3f3f3); }",
    ".imagen4-caption { font-size: 11px; color: var(--jp-ui-font-color2, #666); }",
    # the history tab shows the `%imagen4 history` table
    ".imagen4-history-table table { border-collapse: collapse; font-size: 12px; margin-top: 4px; }",
    ".imagen4-history-table th, .imagen4-history-table td { padding: 3px 6px; text-align: left;"
    " vertical-align: top; border-bottom: 1px solid var(--jp-border-color2, #e0e0e0); }",
    ".imagen4-history-table th { font-weight: 600; color: var(--jp-ui-font-color1, #222); }",
    ".imagen4-history-table .widget-html-content { line-height: 1.4; }",
    ".imagen4-history-table code { white-space: nowrap; }",
]


def style_html() -> str:
    """The `<style>` element: the rules above plus one shape per aspect ratio button."""
    shapes = []
    for i, ratio in enumerate(ASPECT_RATIOS, start=1):
        w, h = RATIO_SHAPES[ratio]
        shapes.append(f".imagen4-ratio .widget-toggle-button:nth-of-type({i})::before {{ width:{w}px; height:{h}px; }}")
    return "<style>" + "\n".join(RULES + shapes) + "</style>"
