"""The panel's stylesheet (a hidden HTML widget holds it). Colours come from JupyterLab's theme variables, with
light fallbacks, so the panel reads well in light and dark themes: text only in the font colours (4.5:1 or
more), state colours on borders and shapes. Labels wrap rather than truncate; long text ends in an ellipsis
(its whole text on hover)."""
from __future__ import annotations

from ...api.request import ASPECT_RATIOS, MAX_IMAGES

# the drawn shape of each ratio (width, height in px), shown before the label of its toggle button
RATIO_SHAPES = {"1:1": (13, 13), "16:9": (20, 11), "9:16": (9, 16), "3:4": (12, 16), "4:3": (16, 12)}

FG = "var(--jp-ui-font-color1, #1f2937)"
FG2 = "var(--jp-content-font-color2, #4b5563)"
ELLIPSIS = "overflow:hidden; text-overflow:ellipsis; white-space:nowrap; min-width:0;"

RULES = [
    ".imagen4-panel { max-width: 980px; color: " + FG + "; }",
    # buttons never shrink under their label: rows wrap instead, and a label too long for the panel wraps
    ".imagen4-panel .jupyter-button { flex: 0 0 auto; max-width: 100%; overflow: visible; white-space: normal;"
    " height: auto; min-height: var(--jp-widgets-inline-height, 28px); line-height: 1.2; padding-top: 4px;"
    " padding-bottom: 4px; }",
    ".imagen4-panel .widget-toggle-buttons { flex-wrap: wrap; height: auto; }",
    ".imagen4-panel .widget-toggle-buttons .widget-toggle-button { flex: 0 0 auto; }",
    ".imagen4-row { gap: 6px 8px; }",
    # the text boxes fill the panel's width inside their margins (100% plus margins would clip the right border)
    ".imagen4-controls > .widget-textarea { align-self: stretch; width: auto; box-sizing: border-box; }",
    ".imagen4-controls > .widget-textarea textarea { box-sizing: border-box; width: 100%; }",
    ".imagen4-group { gap: 6px; margin-right: 12px; flex-wrap: wrap; }",
    ".imagen4-label { font-size: var(--jp-ui-font-size1, 13px); font-weight: 600; color: " + FG + ";"
    " white-space: nowrap; }",
    ".imagen4-ratio .widget-toggle-button { display:inline-flex; align-items:center; gap:6px; vertical-align: top; }",
    ".imagen4-ratio .widget-toggle-button::before { content:''; display:inline-block; box-sizing:border-box;"
    " border:2px solid currentColor; border-radius:2px; flex: none; }",
    ".imagen4-count { font-size: 11px; color: " + FG2 + "; text-align: right; }",
    ".imagen4-count.imagen4-over { color: " + FG + "; font-weight: bold; }",
    ".imagen4-count.imagen4-over .widget-html-content::before { content: 'over the limit: '; }",
    ".imagen4-reason { color: " + FG + "; min-width: 0; flex: 1 1 240px; }",
    ".imagen4-reason .widget-html-content { white-space: normal; line-height: 1.4; }",
    ".imagen4-hint { color: " + FG2 + "; }",
    ".imagen4-cost { color: " + FG2 + "; font-size: 12px; min-width: 0; margin: 0 8px 0 2px; }",
    ".imagen4-cost.imagen4-over { color: " + FG + "; font-weight: bold; }",
    ".imagen4-error, .imagen4-panel .imagen4-err { color: " + FG + "; border-left: 3px solid"
    " var(--jp-error-color1, #c62828); padding-left: 6px; }",
    # the missing-key banner
    ".imagen4-banner { border: 1px solid var(--jp-border-color1, #bdbdbd); border-left: 4px solid"
    " var(--jp-warn-color1, #ef6c00); background: var(--jp-layout-color1, #fff); padding: 6px 8px; margin: 4px 0;"
    " box-sizing: border-box; }",
    ".imagen4-banner .widget-html-content { white-space: normal; line-height: 1.5; }",
    ".imagen4-panel code { color: inherit; }",
    # the task list: one line per task (state and time, a FloatProgress, what it is)
    ".imagen4-tasks-head .widget-html-content { line-height: 18px; }",
    ".imagen4-task { gap: 0 8px; padding: 2px 0; font-size: 12px; }",
    ".imagen4-task > * { margin-top:0; margin-bottom:0; }",
    ".imagen4-task-state { flex: none; }",
    ".imagen4-task-state .widget-html-content { display:flex; gap:8px; align-items:center; white-space:nowrap; }",
    ".imagen4-task-state .imagen4-elapsed { min-width: 40px; }",
    # one line per task: what it is, then the prompt, which ends in an ellipsis (whole on hover); an error below
    ".imagen4-task-info { min-width: 0; }",
    ".imagen4-task-info .widget-html-content { display: block; line-height: 18px; overflow: hidden; }",
    ".imagen4-task-line { display: flex; flex-wrap: nowrap; gap: 0 8px; align-items: center; min-width: 0; }",
    ".imagen4-task-line > span, .imagen4-task-line > code { flex: 0 1 auto; min-width: 0; " + ELLIPSIS + " }",
    ".imagen4-task-line > code, .imagen4-task-line > .imagen4-origin { flex: 0 0 auto; }",
    # the task id gives way in its middle (`task_go…087861`) before it would be cut at its end
    ".imagen4-task-line > .imagen4-tid { flex: 0 1 auto; min-width: 8ch; }",
    # a narrow panel (an 800 px window with the file browser open): the progress bar gives its width to the task
    ".imagen4-panel { container-type: inline-size; }",
    "@container (max-width: 520px) { .imagen4-bar.widget-progress { width: 36px !important; }"
    " .imagen4-task-line > .imagen4-note { display: none; } }",
    ".imagen4-task-line > .imagen4-prompt-text { flex: 1 1 0; min-width: 0; color: " + FG2 + "; }",
    ".imagen4-task-info .imagen4-err { display: block; white-space: normal; }",
    ".imagen4-task-info .imagen4-note { color: " + FG2 + "; }",
    ".imagen4-task .imagen4-badge { display:inline-block; min-width:64px; padding:0 6px; border-radius:8px;"
    " text-align:center; background: var(--jp-layout-color2, #eee); color: " + FG + ";"
    " border-left: 4px solid var(--jp-border-color1, #9ca3af); }",
    ".imagen4-task.imagen4-s-generating .imagen4-badge { border-left-color: var(--jp-brand-color1, #1976d2); }",
    ".imagen4-task.imagen4-s-success .imagen4-badge, .imagen4-task.imagen4-s-reused .imagen4-badge"
    " { border-left-color: var(--jp-success-color1, #2e7d32); }",
    ".imagen4-task.imagen4-s-fail .imagen4-badge, .imagen4-task.imagen4-s-error .imagen4-badge,"
    " .imagen4-task.imagen4-s-unsent .imagen4-badge, .imagen4-task.imagen4-s-unknown .imagen4-badge"
    " { border-left-color: var(--jp-error-color1, #c62828); }",
    ".imagen4-bar.widget-progress { height: 18px; flex: none; margin: 0; }",
    ".imagen4-bar .progress { height: 6px; margin: 0; align-self: center; border-radius: 3px; overflow: hidden;"
    " background: var(--jp-layout-color3, #ddd); }",
    # the gallery and the larger view
    ".imagen4-line { display: inline-block; max-width: 100%; vertical-align: bottom; " + ELLIPSIS + " }",
    ".imagen4-big-info { width: 100%; min-width: 0; overflow: hidden; }",
    ".imagen4-big-info .widget-html-content { line-height: 1.5; white-space: normal; }",
    ".imagen4-big-info .imagen4-line { display: block; }",
    ".imagen4-path { font-size: 11px; color: " + FG2 + "; }",
    ".imagen4-thumb-box { position: relative; overflow: hidden; border-radius: 4px; }",
    ".imagen4-thumb-box .imagen4-zoom { position:absolute; top:0; left:0; width:100%; height:100%; opacity:0;"
    " margin:0; cursor: zoom-in; }",
    # the whole image at its ratio, letterboxed in the theme's background (never cropped)
    ".imagen4-thumb-box { background: var(--jp-layout-color2, #eee); }",
    ".imagen4-thumb { object-fit: contain; display: block; }",
    ".imagen4-tile { padding: 3px; border-radius: 6px; border: 2px solid transparent; }",
    ".imagen4-tile.imagen4-selected { border-color: var(--jp-brand-color1, #1976d2);"
    " background: var(--jp-layout-color2, #eee); }",
    ".imagen4-caption .widget-html-content { font-size: 11px; color: " + FG2 + "; line-height: 16px; "
    + ELLIPSIS + " }",
    ".imagen4-tile.imagen4-selected .imagen4-caption .widget-html-content { color: " + FG + "; }",
    ".imagen4-panel .imagen4-tabs .lm-TabBar-tab, .imagen4-panel .imagen4-tabs .lm-TabBar-tabLabel { color: "
    + FG + "; }",
    # the history tab shows the `%imagen4 history` table (its own inline styles: left-aligned, theme colours)
    ".imagen4-history-table .widget-html-content { line-height: 1.4; white-space: normal; }",
]


def style_html() -> str:
    """The `<style>` element: the rules above, one shape per aspect ratio button, and the image counts a model
    cannot take dimmed (`imagen4-max-N` on the count buttons: the ones after N)."""
    shapes = [f".imagen4-num.imagen4-max-{n} .widget-toggle-button:nth-of-type(n+{n + 1}) {{ opacity: 0.4;"
              " cursor: not-allowed; box-shadow: none; }" for n in range(1, MAX_IMAGES)]
    for i, ratio in enumerate(ASPECT_RATIOS, start=1):
        w, h = RATIO_SHAPES[ratio]
        shapes.append(f".imagen4-ratio .widget-toggle-button:nth-of-type({i})::before {{ width:{w}px; height:{h}px; }}")
    return "<style>" + "\n".join(RULES + shapes) + "</style>"
