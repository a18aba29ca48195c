"""Experiments against the simulator over real sockets: X/Y/Z grids over any field or placeholder (bodies sent,
captions and metadata with credits and seconds, nothing created again), template batches (all combinations, a
balanced sample that the same seed draws again)."""
from __future__ import annotations

from collections import Counter

import pytest
from conftest import session_on as make_session

from imagen4_jupyter import InvalidRequestError, generate_many, grid
from imagen4_jupyter.research.budget import BatchPlan
from imagen4_jupyter.research.experiments import GridSet


@pytest.fixture
def session(sim, tmp_path):
    s = make_session(sim, tmp_path)
    yield s
    s.close()


TEMPLATE = "A {animal} at dusk, {style}"
MODELS = ["fast", "standard", "ultra"]
ANIMALS = ["fox", "owl"]


def shown(obj) -> tuple[dict, dict]:
    from IPython.core.formatters import DisplayFormatter

    return DisplayFormatter().format(obj)


def test_model_by_placeholder_grid_sends_exact_bodies_and_shows_cost_and_time(sim, session):
    g = grid(TEMPLATE, x={"model": MODELS}, y={"animal": ANIMALS}, style="watercolor", seed=7, session=session,
             cell_size=64, progress=False)
    assert g.shape == (2, 3)
    assert g.col_labels == MODELS and g.row_labels == ANIMALS
    assert len(sim.tasks) == 6 == sim.count("createTask")
    # the exact bodies sent, each model's own schema: fast's seed an integer and 16:9 by default, ultra no count
    expected = {
        "fast": {"model": "google/imagen4-fast", "input": {"aspect_ratio": "16:9", "num_images": "1", "seed": 7}},
        "standard": {"model": "google/imagen4", "input": {"aspect_ratio": "1:1", "num_images": "1", "seed": "7"}},
        "ultra": {"model": "google/imagen4-ultra", "input": {"aspect_ratio": "1:1", "seed": "7"}},
    }
    for r, animal in enumerate(ANIMALS):
        for c, model in enumerate(MODELS):
            body = sim.task(g.task_ids[r][c]).param
            want = {"model": expected[model]["model"],
                    "input": {"prompt": f"A {animal} at dusk, watercolor", **expected[model]["input"]}}
            assert body == want, (animal, model)

    # captions: model, credits and seconds, the seconds the service reported for that very task
    texts = g.layout.caption_texts
    for r in range(2):
        for c, model in enumerate(MODELS):
            facts = g.facts[r][c]
            entry = session.history.get(g.task_ids[r][c])
            assert facts["model"] == f"google/imagen4{'' if model == 'standard' else '-' + model}"
            assert facts["credits"] == entry.credits and facts["credits"] > 0
            assert facts["seconds"] == pytest.approx(sim.task(g.task_ids[r][c]).total_duration, abs=0.0015)
            assert texts[r][c] == (f"{model} · {'' if facts['measured'] else '~'}{facts['credits']:g} cr · "
                                   f"{facts['seconds']:.1f} s")
    # the output metadata carries them per cell, beside the task ids and models
    data, md = shown(g)
    meta = md["imagen4"]
    assert meta["task_ids"] == g.task_ids
    assert meta["credits"] == [[f["credits"] for f in row] for row in g.facts]
    assert meta["seconds"] == [[f["seconds"] for f in row] for row in g.facts]
    assert meta["axes"]["x"] == {"field": "model", "values": MODELS}
    assert meta["axes"]["y"] == {"field": "animal", "values": ANIMALS}
    # one summary line per model: images, credits per image, median seconds; drawn under the cells too
    assert len(g.summary) == 3 and meta["summary"] == g.summary
    for line, model in zip(g.summary, MODELS, strict=True):
        assert line.startswith(f"{model}: 2 images, ") and "credits/image, median " in line
    assert g.layout.footer is not None and g.layout.footer[3] <= g.image.height
    assert "fast: 2 images" in repr(g)

    # a second run creates nothing and shows the same cells, costs and times
    before = sim.count("createTask")
    again = grid(TEMPLATE, x={"model": MODELS}, y={"animal": ANIMALS}, style="watercolor", seed=7, session=session,
                 cell_size=64, progress=False)
    assert sim.count("createTask") == before
    assert again.task_ids == g.task_ids
    assert all(it.origin == "reused" for row in again.cells for it in row)
    assert [[f["credits"] for f in row] for row in again.facts] == [[f["credits"] for f in row] for row in g.facts]
    assert again.summary == g.summary


def test_a_cell_a_model_cannot_take_is_refused_before_anything_is_sent(sim, session):
    with pytest.raises(InvalidRequestError) as err:
        grid("a {animal}", x={"model": ["fast", "ultra"]}, y={"animal": ["fox"]}, num_images=3, session=session,
             progress=False)
    text = str(err.value)
    assert "model='ultra'" in text and "animal='fox'" in text and "Nothing was sent" in text
    assert sim.count("createTask") == 0
    with pytest.raises(InvalidRequestError, match="neither a request field"):
        grid("a fox", x={"colour": ["red"]}, session=session)
    with pytest.raises(InvalidRequestError, match=r"No value for \{style\}"):
        grid("a fox, {style}", x={"seed": [1]}, session=session)
    assert sim.count("createTask") == 0


def test_z_axis_gives_one_sheet_per_value_and_dry_run_sends_nothing(sim, session):
    plan = grid("a {animal}", x={"seed": [1, 2]}, y={"animal": ANIMALS}, z={"aspect_ratio": ["1:1", "16:9"]},
                session=session, dry_run=True)
    assert isinstance(plan, BatchPlan) and sim.count("createTask") == 0
    sheets = grid("a {animal}", x={"seed": [1, 2]}, y={"animal": ANIMALS}, z={"aspect_ratio": ["1:1", "16:9"]},
                  session=session, cell_size=32, progress=False)
    assert isinstance(sheets, GridSet) and len(sheets) == 2 and len(sim.tasks) == 8
    for sheet, ratio in zip(sheets, ["1:1", "16:9"], strict=True):
        assert sheet.col_labels == ["seed 1", "seed 2"] and sheet.title.endswith(ratio)
        for row in sheet.task_ids:
            assert all(sim.task(t).param["input"]["aspect_ratio"] == ratio for t in row)
        assert sheet.summary == []  # no model axis: no summary per model


def test_template_batch_every_combination(sim, session):
    result = generate_many("a {animal} in {place}", values={"animal": ["fox", "owl"], "place": ["snow", "rain"]},
                           seed=3, session=session, progress=False)
    prompts = sorted(t.param["input"]["prompt"] for t in sim.tasks.values())
    assert prompts == ["a fox in rain", "a fox in snow", "a owl in rain", "a owl in snow"]
    assert result.ok and len(result) == 4


def test_sampled_template_batch_is_balanced_and_the_same_for_the_same_seed(sim, session):
    values = {"animal": ["fox", "owl", "cat"], "style": ["ink", "oil", "pastel", "pixel"], "seed": [1, 2]}
    plan = generate_many("a {animal}, {style}", values=values, sample=9, sample_seed=42, model="fast",
                         session=session, dry_run=True)
    assert sim.count("createTask") == 0
    assert plan.to_create == 9 and "9" in str(plan) and plan.credits == pytest.approx(9 * 4)
    result = generate_many("a {animal}, {style}", values=values, sample=9, sample_seed=42, model="fast",
                           session=session, progress=False)
    assert result.ok and len(result) == 9 == len(sim.tasks)
    sent = [(t.param["input"]["prompt"], t.param["input"]["seed"]) for t in sim.tasks.values()]
    assert len(set(sent)) == 9  # distinct combinations
    animals = Counter(p.split(",")[0][2:] for p, _ in sent)
    styles = Counter(p.split(", ")[1] for p, _ in sent)
    seeds = Counter(s for _, s in sent)
    assert sorted(animals.values()) == [3, 3, 3]
    assert sorted(styles.values()) == [2, 2, 2, 3]
    assert sorted(seeds.values()) == [4, 5]
    # the same seed draws the same sample: nothing new to create; another seed draws another one
    again = generate_many("a {animal}, {style}", values=values, sample=9, sample_seed=42, model="fast",
                          session=session, dry_run=True)
    assert again.to_create == 0
    other = generate_many("a {animal}, {style}", values=values, sample=9, sample_seed=7, model="fast",
                          session=session, dry_run=True)
    assert other.to_create > 0
    with pytest.raises(InvalidRequestError, match="more than the 24 combinations"):
        generate_many("a {animal}, {style}", values=values, sample=25, session=session, dry_run=True)
