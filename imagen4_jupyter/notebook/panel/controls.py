"""The panel's controls: prompt, negative prompt, model, aspect ratio, number of images, seed, Generate, Insert
as code.

They describe a `GenerationRequest` (validated by `GenerationRequest.create`, whose errors say what to fix);
what the buttons do is wired by the panel. Until the user has typed, the line beside Generate is a neutral hint,
never an error.
"""
from __future__ import annotations

import random
from collections.abc import Callable

import ipywidgets as W

from ...api.cards import esc
from ...api.errors import InvalidRequestError
from ...api.models import DEFAULT_MODEL, MODELS, short_name
from ...api.request import ASPECT_RATIOS, MAX_IMAGES, MAX_PROMPT, GenerationRequest

RATIO_NAMES = {"1:1": "square", "16:9": "wide", "9:16": "tall", "3:4": "portrait", "4:3": "landscape"}
SEED_MAX = 2_147_483_647
GENERATE_TIP = "Send a task; you can queue more while others run"
START_HINT = "Describe the image you want, then Generate."
MODEL_NAMES = tuple(m.short for m in MODELS.values())  # standard, fast, ultra


def random_seed() -> str:
    return str(random.randint(1, SEED_MAX))


class Controls(W.VBox):
    """The input widgets; `current_request()` is the request they describe, `validate()` shows why it is not
    valid (and disables Generate) or clears the reason."""

    def __init__(self) -> None:
        full = W.Layout(width="auto")  # stretched by the style (`align-self`): 100% plus margins would clip a border
        self.touched = False  # the user typed something or clicked Generate: from then on, reasons are errors
        self.blocked = ""  # why Generate is off whatever the controls say (no API key), set by the panel
        self.version = 0  # counts the changes of the controls (a click after a change is never a double click)
        self.prompt = W.Textarea(placeholder="Describe the image you want…", rows=3, layout=full)
        self.prompt.add_class("imagen4-prompt")
        self.prompt_count = W.HTML()
        self.prompt_count.add_class("imagen4-count")
        self.negative = W.Textarea(placeholder="Negative prompt (optional): what to leave out", rows=1,
                                   layout=W.Layout(width="auto"))
        self.negative.add_class("imagen4-negative")
        self.negative_count = W.HTML()
        self.negative_count.add_class("imagen4-count")
        self.model = W.ToggleButtons(options=list(MODEL_NAMES), value=short_name(DEFAULT_MODEL),
                                     tooltips=[f"{m.title}: {m.list_price} credits a task (list price), up to "
                                               f"{m.max_images} image{'s' if m.max_images > 1 else ''}"
                                               for m in MODELS.values()],
                                     style={"button_width": "auto"})
        self.model.add_class("imagen4-model")
        self.ratio = W.ToggleButtons(options=list(ASPECT_RATIOS), value="1:1",
                                     tooltips=[f"{r} {RATIO_NAMES[r]}" for r in ASPECT_RATIOS],
                                     style={"button_width": "auto"})
        self.ratio.add_class("imagen4-ratio")
        self.num = W.ToggleButtons(options=[str(i) for i in range(1, MAX_IMAGES + 1)], value="1",
                                   tooltips=[f"{i} image{'s' if i > 1 else ''}" for i in range(1, MAX_IMAGES + 1)],
                                   style={"button_width": "32px"})
        self.num.add_class("imagen4-num")
        self.seed = W.Text(placeholder="random each time", layout=W.Layout(width="150px"),
                           tooltip="A seed you type stays for every Generate until you change it; "
                                   "empty: a new random seed each time")
        self.seed.add_class("imagen4-seed")
        self.random_seed = W.Button(description="random", tooltip="Fill in a new random seed",
                                    layout=W.Layout(width="auto"))
        self.random_seed.add_class("imagen4-random-seed")
        self.generate = W.Button(description="Generate", button_style="primary", icon="play", tooltip=GENERATE_TIP,
                                 layout=W.Layout(width="auto"))
        self.generate.add_class("imagen4-generate")
        self.insert = W.Button(description="Insert as code", icon="code", layout=W.Layout(width="auto"),
                               tooltip="Put the %%imagen4 cell for the selected image's task (or the latest "
                                       "task, or these controls) below this cell")
        self.insert.add_class("imagen4-insert")
        self.reason = W.HTML()
        self.reason.add_class("imagen4-reason")
        self.cost = W.HTML()  # what Generate would cost, and what is left of the kernel's budget (set by the panel)
        self.cost.add_class("imagen4-cost")
        self.cost_of: Callable[[str], tuple[str, bool]] | None = None  # model -> (text, over the budget)

        def group(label: str, *widgets: W.Widget, css: str) -> W.HBox:
            name = W.HTML(f"<span class='imagen4-label'>{esc(label)}</span>")
            box = W.HBox([name, *widgets], layout=W.Layout(align_items="center"))
            box.add_class("imagen4-group")
            box.add_class(css)
            return box

        groups = [group("Model", self.model, css="imagen4-model-group"),
                  group("Aspect ratio", self.ratio, css="imagen4-ratio-group"),
                  group("Images", self.num, css="imagen4-num-group"),
                  group("Seed", self.seed, self.random_seed, css="imagen4-seed-group")]
        options = W.HBox(groups, layout=W.Layout(flex_flow="row wrap", align_items="center"))
        actions = W.HBox([self.generate, self.insert, self.cost, self.reason],
                         layout=W.Layout(align_items="center", flex_flow="row wrap"))
        for row in (options, actions):
            row.add_class("imagen4-row")
        super().__init__([self.prompt, self.prompt_count, self.negative, self.negative_count, options, actions],
                         layout=W.Layout(width="100%"))
        self.add_class("imagen4-controls")
        for w in (self.prompt, self.negative, self.seed, self.ratio, self.num):
            w.observe(self._typed, names="value")
        self.model.observe(self._model_changed, names="value")
        self._limit_num()
        self.random_seed.on_click(lambda _b: self.new_seed())
        self.validate()

    def _typed(self, change: dict) -> None:
        if change.get("owner") is self.num and int(change["new"]) > self.max_images():
            touched, num = self.touched, change["owner"]
            num.value = str(self.max_images())  # a button the model cannot take (shown disabled): no change
            self.touched = touched
            self.validate()
            return
        self.version += 1
        if change.get("new"):
            self.touched = True
        self.validate()

    def _model_changed(self, change: dict) -> None:
        self.version += 1
        spec = next((m for m in MODELS.values() if m.short == change["new"]), None)
        if spec is not None and int(self.num.value) > spec.max_images:
            self.num.value = str(spec.max_images)  # ultra makes one image
        self._limit_num()
        self.validate()

    def max_images(self) -> int:
        spec = next((m for m in MODELS.values() if m.short == self.model.value), None)
        return spec.max_images if spec is not None else MAX_IMAGES

    def _limit_num(self) -> None:
        """The image counts the chosen model cannot take look disabled (the style dims them: class
        `imagen4-max-N`) and say why on hover; a click on one changes nothing."""
        top = self.max_images()
        for n in range(1, MAX_IMAGES + 1):
            self.num.remove_class(f"imagen4-max-{n}")
        if top < MAX_IMAGES:
            self.num.add_class(f"imagen4-max-{top}")
        self.num.set_trait("tooltips", [f"{i} image{'s' if i > 1 else ''}" if i <= top else
                                        f"{self.model.value} makes at most {top} image{'s' if top > 1 else ''} a task"
                                        for i in range(1, MAX_IMAGES + 1)])

    def current_request(self, seed: str | None = None) -> GenerationRequest:
        """The request the controls describe (raises InvalidRequestError saying what to fix)."""
        # stripped like the magic strips a cell body, so "Insert as code" sends the very same request
        return GenerationRequest.create(self.prompt.value.strip(), negative_prompt=self.negative.value.strip() or None,
                                        aspect_ratio=self.ratio.value, num_images=int(self.num.value),
                                        seed=seed if seed is not None else (self.seed.value.strip() or None),
                                        model=self.model.value)

    def state(self) -> tuple:
        """What the controls say now, and how often they changed (a click with the same state soon after another
        is a double click; any change in between, even one undone, makes it a new click)."""
        return (self.version, self.prompt.value, self.negative.value, self.model.value, self.ratio.value,
                self.num.value, self.seed.value)

    def validate(self) -> GenerationRequest | None:
        """Update the counts; enable Generate with a valid request, else disable it and say why (a neutral hint
        before the user typed anything)."""
        _count(self.prompt_count, len(self.prompt.value))
        _count(self.negative_count, len(self.negative.value))
        self.show_cost()
        try:
            request = self.current_request()
        except InvalidRequestError as err:
            self.generate.disabled = True
            self.generate.tooltip = str(err)
            if self.touched:
                self.reason.value = f"<span class='imagen4-error'>{esc(err)}</span>"
            else:
                self.reason.value = f"<span class='imagen4-hint'>{esc(START_HINT)}</span>"
            return None
        if self.blocked:
            self.generate.disabled = True
            self.generate.tooltip = self.blocked
            self.reason.value = f"<span class='imagen4-hint'>{esc(self.blocked)}</span>"
            return None
        self.generate.disabled = False
        self.generate.tooltip = GENERATE_TIP
        self.reason.value = ""
        return request

    def show_cost(self) -> None:
        """The line beside the buttons: what a task of the chosen model costs (`~6 credits`, `~`: an estimate)
        and what the kernel's budget has left; marked when the task would pass it (the session then refuses it,
        nothing is sent)."""
        if self.cost_of is None:
            return
        text, over = self.cost_of(self.model.value)
        self.cost.value = f"<span title='{esc(text)}'>{esc(text)}</span>"
        if over:
            self.cost.add_class("imagen4-over")
        else:
            self.cost.remove_class("imagen4-over")

    def take_request(self) -> GenerationRequest | None:
        """The request to send now: the box's seed (it stays there until the user changes it), or a new random
        one when the box is empty (so every task can be reproduced; the box stays empty). None (and the reason
        shown) if the controls are not valid."""
        self.touched = True
        if self.validate() is None:
            return None
        seed = self.seed.value.strip() or random_seed()
        try:
            request = self.current_request(seed=seed)
        except InvalidRequestError as err:
            self.reason.value = f"<span class='imagen4-error'>{esc(err)}</span>"
            return None
        return request

    def new_seed(self) -> str:
        """Fill the seed box with a new random seed."""
        self.seed.value = random_seed()
        return self.seed.value

    def fill(self, request: GenerationRequest | dict | None) -> None:
        """Set the controls from a request (or a history request dict)."""
        if request is None:
            return
        data = request.to_dict() if isinstance(request, GenerationRequest) else dict(request)
        self.prompt.value = data.get("prompt") or ""
        self.negative.value = data.get("negative_prompt") or ""
        self.model.value = MODELS.get(data.get("model") or DEFAULT_MODEL, MODELS[DEFAULT_MODEL]).short
        if data.get("aspect_ratio") in ASPECT_RATIOS:
            self.ratio.value = data["aspect_ratio"]
        if str(data.get("num_images")) in self.num.options:
            self.num.value = str(data["num_images"])
        self.seed.value = str(data["seed"]) if data.get("seed") is not None else ""
        self.validate()


def _count(widget: W.HTML, n: int) -> None:
    widget.value = f"{n} / {MAX_PROMPT}"
    if n > MAX_PROMPT:
        widget.add_class("imagen4-over")
    else:
        widget.remove_class("imagen4-over")
