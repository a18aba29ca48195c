"""Grids and contact sheets from real tasks on the simulator: layout, labels, cell contents, saved files."""
from __future__ import annotations

import base64
import hashlib
import json

import pytest
from PIL import Image, ImageChops, ImageStat

from imagen4_jupyter import contact_sheet, generate_many, prompt_ratio_grid, prompt_seed_grid
from imagen4_jupyter.research.sheet import BACKGROUND, FAILED, _font, _wrap


def ink_in(image, box) -> int:
    """How many pixels inside `box` differ from the background."""
    region = image.crop(box).convert("RGB")
    diff = ImageChops.difference(region, Image.new("RGB", region.size, BACKGROUND)).convert("L")
    return sum(diff.histogram()[41:])


def mean_abs_diff(a, b) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


PROMPTS = ["A watercolor lighthouse on a rocky coast at dawn, soft pastel light, gentle waves, seagulls "
           "circling high above the cliffs", "a red fox"]
SEEDS = [1, 2, 3]


@pytest.fixture
def grid(sim, client):
    return prompt_seed_grid(PROMPTS, SEEDS, client=client, cell_size=48, progress=False)


def test_prompt_seed_grid_places_each_result_in_its_labelled_cell(sim, grid):
    assert grid.shape == (2, 3)
    assert grid.row_labels == PROMPTS and grid.col_labels == ["seed 1", "seed 2", "seed 3"]
    # one task per cell, each with the prompt of its row and the seed of its column
    ids = grid.task_ids
    assert len({t for row in ids for t in row}) == 6 and len(sim.tasks) == 6
    for r, row in enumerate(ids):
        for c, tid in enumerate(row):
            sent = sim.task(tid).param["input"]
            assert (sent["prompt"], sent["seed"]) == (PROMPTS[r], str(SEEDS[c]))

    image, layout = grid.image, grid.layout
    assert len(layout.cells) == 2 and all(len(row) == 3 for row in layout.cells)
    # the simulator's 64 px images are scaled to the 48 px cell; the sheet is labels + 3 cells wide, title +
    # labels + 2 cells high
    for row in layout.cells:
        for x0, y0, x1, y1 in row:
            assert (x1 - x0, y1 - y0) == (48, 48)
            assert 0 <= x0 and x1 <= image.width and 0 <= y0 and y1 <= image.height
    assert layout.cells[0][1][0] > layout.cells[0][0][2] and layout.cells[1][0][1] > layout.cells[0][0][3]  # no overlap
    assert image.width == layout.cells[0][2][2] + 8
    assert image.height == layout.cells[1][0][3] + 8
    assert image.width < 3 * 48 + 300 and image.height < 2 * 48 + 120  # stays small

    # each cell shows the thumbnail of its own task's image (not another cell's)
    for r in range(2):
        for c in range(3):
            item = grid.cell(r, c)
            thumb = Image.open(item.images[0].path).convert("RGB")
            thumb.thumbnail((48, 48), Image.Resampling.LANCZOS)
            crop = image.crop(layout.images[r][c])
            assert mean_abs_diff(crop, thumb) < 2.0
            other = grid.cell(1 - r, c)
            assert other.images[0].sha256 != item.images[0].sha256  # another prompt: another picture
            wrong = Image.open(other.images[0].path).convert("RGB")
            wrong.thumbnail((48, 48), Image.Resampling.LANCZOS)
            assert mean_abs_diff(crop, wrong) > 5.0

    # labels are drawn: ink in every row label, column label and the title, none in the gaps
    for box in layout.row_labels + layout.col_labels + [layout.title]:
        assert ink_in(image, box) > 20, box
    gap = (layout.cells[0][0][2], layout.cells[0][0][1], layout.cells[0][1][0], layout.cells[0][0][3])
    assert ink_in(image, gap) == 0


def test_grid_saves_png_with_provenance_and_jpeg(grid, tmp_path):
    path = grid.save(tmp_path / "out" / "grid.png")
    with Image.open(path) as im:
        assert im.size == grid.image.size and im.format == "PNG"
        meta = json.loads(im.text["imagen4"])
    assert meta["rows"] == PROMPTS and meta["cols"] == ["seed 1", "seed 2", "seed 3"]
    assert [[c["task_id"] for c in row] for row in meta["cells"]] == grid.task_ids
    assert meta["cells"][1][2]["request"]["seed"] == "3"
    jpg = grid.save(tmp_path / "grid.jpg", quality=80)
    with Image.open(jpg) as im:
        assert im.size == grid.image.size and im.format == "JPEG"


def shown(obj) -> tuple[dict, dict]:
    """What IPython publishes for an object (the data and metadata of its display_data message)."""
    from IPython.core.formatters import DisplayFormatter

    return DisplayFormatter().format(obj)


def test_grid_output_carries_imagen4_at_the_top_of_its_metadata(grid):
    data, md = shown(grid)
    assert base64.b64decode(data["image/png"]).startswith(b"\x89PNG") and "image/jpeg" not in data  # small: PNG
    assert "image/png" not in md  # nothing under the mime type: at the top, as a cell image's
    meta = md["imagen4"]
    assert meta["task_ids"] == grid.task_ids and all(t in grid.batch.task_ids for row in meta["task_ids"] for t in row)
    assert meta["requests"][1][2] == grid.cell(1, 2).request.to_dict() and meta["requests"][1][2]["seed"] == "3"
    assert meta["models"] == [["google/imagen4"] * 3] * 2 and meta["states"] == [["success"] * 3] * 2
    assert (meta["kind"], meta["rows"], meta["cols"]) == ("prompt x seed", PROMPTS, ["seed 1", "seed 2", "seed 3"])
    assert meta["grid"]["task_ids"] == grid.task_ids  # the earlier shape, for its readers
    assert meta["embedded_sha256"] == hashlib.sha256(base64.b64decode(data["image/png"])).hexdigest()
    assert (meta["width"], meta["height"], meta["mime"]) == (*grid.image.size, "image/png")
    json.dumps(md)  # plain JSON, as a notebook stores it


def test_a_large_sheet_is_shown_as_jpeg_with_the_same_metadata(grid, monkeypatch):
    from imagen4_jupyter.research import grids

    monkeypatch.setattr(grids, "MAX_INLINE_PNG", 100)  # every sheet counts as large
    data, md = shown(grid)
    assert "image/png" not in data and base64.b64decode(data["image/jpeg"]).startswith(b"\xff\xd8")
    assert md["imagen4"]["mime"] == "image/jpeg" and md["imagen4"]["task_ids"] == grid.task_ids


def test_saved_grids_carry_their_provenance_for_read_provenance(grid, tmp_path):
    from imagen4_jupyter.api.provenance import read_provenance

    expected = json.loads(json.dumps(grid.provenance()))
    for name, options in (("g.png", {}), ("g2.png", {"compress_level": 1}), ("g.jpg", {"quality": 80}),
                          ("g.jpeg", {})):
        info = read_provenance(grid.save(tmp_path / name, **options))
        assert info == expected, name
        assert [[c["task_id"] for c in row] for row in info["cells"]] == grid.task_ids
        assert info["cells"][0][1]["request"]["prompt"] == PROMPTS[0] and info["kind"] == "prompt x seed"
    with Image.open(tmp_path / "g.png") as im:  # viewers show the line in words
        assert im.text["Description"].startswith("Imagen 4 prompt x seed grid, 2x3") and grid.task_ids[1][2] in \
            im.text["Description"]
    assert read_provenance(grid.save(tmp_path / "g.webp")) is None  # other formats carry nothing of ours


def test_a_grid_with_a_non_latin_title_round_trips(sim, client, tmp_path):
    from imagen4_jupyter.api.provenance import read_provenance

    g = prompt_seed_grid(["лиса в снегу 🦊"], [1], client=client, cell_size=32, progress=False, title="Füchse · 狐")
    for name in ("u.png", "u.jpg"):
        info = read_provenance(g.save(tmp_path / name))
        assert info["title"] == "Füchse · 狐" and info["cells"][0][0]["request"]["prompt"] == "лиса в снегу 🦊"


def test_grid_reuses_seeded_cells_through_the_session(sim, tmp_path):
    from conftest import FAST_POLL, FAST_RETRY, KEY

    from imagen4_jupyter import Imagen4Client
    from imagen4_jupyter.records.history import History
    from imagen4_jupyter.records.session import Session

    client = Imagen4Client(api_key=KEY, base_url=sim.url, schedule=FAST_POLL, retry=FAST_RETRY,
                           cache_dir=tmp_path / "img")
    session = Session(client=client, history=History(tmp_path / "h.jsonl"))
    try:
        first = prompt_seed_grid(["a kite"], [1, 2], session=session, cell_size=64, progress=False)
        again = prompt_seed_grid(["a kite"], [1, 2], session=session, cell_size=64, progress=False)
    finally:
        session.close()
    assert sim.count("createTask") == 2
    assert again.task_ids == first.task_ids
    assert again.to_png() == first.to_png()


def test_prompt_ratio_grid_fits_every_ratio_in_square_cells(sim, client):
    grid = prompt_ratio_grid(["a cat"], ["16:9", "9:16"], client=client, cell_size=80, progress=False)
    assert grid.col_labels == ["16:9", "9:16"]
    wide, tall = grid.layout.images[0]
    assert (wide[2] - wide[0]) == 80 and (wide[3] - wide[1]) < 50
    assert (tall[3] - tall[1]) == 80 and (tall[2] - tall[0]) < 50
    for x0, y0, x1, y1 in grid.layout.cells[0]:
        assert (x1 - x0, y1 - y0) == (80, 80)


def test_failed_cells_show_their_state_and_the_rest_still_render(sim, client):
    sim.next_outcomes.append({"fail": ("400", "filtered")})
    grid = prompt_seed_grid(["a"], [1, 2], client=client, cell_size=64, progress=False, concurrency=1)
    assert [it.state for it in grid.cells[0]] == ["fail", "success"]
    assert grid.layout.images[0][0] is None and grid.layout.images[0][1] is not None
    x0, y0, x1, y1 = grid.layout.cells[0][0]
    assert grid.image.getpixel((x0 + 1, y0 + 1)) == FAILED  # a tinted placeholder
    assert ink_in(grid.image, (x0, y0, x1, y1)) > 20  # with its state written in it
    assert "1 without images" in repr(grid)


def test_contact_sheet_from_results_with_multi_image_cells(sim, client, tmp_path):
    batch = generate_many(["one", {"prompt": "four", "num_images": 4}, "three"], client=client, progress=False)
    sheet = contact_sheet(batch.results, cols=2, cell_size=100, title="sheet")
    assert isinstance(sheet.image, Image.Image) and sheet.size == sheet.image.size  # PIL's attributes answer
    data, md = shown(sheet)
    assert "image/png" in data and "image/png" not in md
    meta = md["imagen4"]  # at the top of the output's metadata, every cell's task id, request and model
    assert meta["kind"] == "contact sheet" and meta["title"] == "sheet"
    assert meta["task_ids"] == [[batch[0].task_id, batch[1].task_id], [batch[2].task_id, None]]
    assert meta["requests"][0][1]["num_images"] == 4 and meta["requests"][1][1] is None
    assert meta["models"] == [["google/imagen4", "google/imagen4"], ["google/imagen4", None]]
    saved = sheet.save(tmp_path / "sheet.png")
    with Image.open(saved) as im:
        assert json.loads(im.text["imagen4"])["cells"][0][1]["task_id"] == batch[1].task_id
    png = contact_sheet([[batch[0], None], [batch[1].job, batch[2].images[0].path]], cell_size=100, as_bytes=True)
    assert png.startswith(b"\x89PNG")
    from imagen4_jupyter.research.sheet import compose

    image, layout = compose(batch, cols=3, cell_size=100)
    assert len(layout.cells) == 1 and len(layout.cells[0]) == 3
    # the 4-image cell is tiled 2 x 2 inside the cell box
    x0, y0, x1, y1 = layout.images[0][1]
    assert (x1 - x0, y1 - y0) == (100, 100)
    quarter = Image.open(batch[1].images[0].path).convert("RGB")
    quarter.thumbnail((50, 50), Image.Resampling.LANCZOS)
    assert mean_abs_diff(image.crop((x0, y0, x0 + 50, y0 + 50)), quarter) < 2.0
    with pytest.raises(ValueError, match="2 column labels for 3 columns"):
        contact_sheet([batch.results], col_labels=["a", "b"])
    with pytest.raises(TypeError, match="cannot show"):
        contact_sheet([object()])


def test_long_labels_wrap_and_end_with_dots():
    font = _font(13)
    lines = _wrap("word " * 200, font, 100, 3)
    assert len(lines) == 3 and lines[-1].endswith("...")
    assert all(font.getlength(line) <= 100 for line in lines)
    assert _wrap("x" * 500, font, 60, 2)[0] and all(font.getlength(x) <= 60 for x in _wrap("x" * 500, font, 60, 2))


def test_grids_take_a_model_and_say_it_in_the_title(sim, client):
    grid = prompt_seed_grid(["a kite"], [1, 2], client=client, cell_size=48, progress=False, model="fast")
    sent = sorted(sim.tasks.values(), key=lambda t: t.param["input"]["seed"])
    assert [t.model for t in sent] == ["google/imagen4-fast"] * 2
    assert [t.param["input"]["seed"] for t in sent] == [1, 2]  # fast's seed is a JSON integer
    assert {t.param["input"]["aspect_ratio"] for t in sent} == {"16:9"}  # fast's own default ratio
    assert grid.title == "prompt x seed · fast · 16:9"
    assert grid.provenance()["cells"][0][0]["request"]["model"] == "google/imagen4-fast"
    ratios = prompt_ratio_grid(["a kite"], ["1:1"], client=client, cell_size=48, progress=False, model="ultra")
    assert ratios.title == "prompt x aspect ratio · ultra"
    assert ratios.cell(0, 0).request.model == "google/imagen4-ultra"
    assert prompt_seed_grid(["a"], [1], client=client, progress=False, cell_size=48).title == \
        "prompt x seed · standard · 1:1"


def test_a_grid_is_validated_per_model_before_anything_is_sent_and_can_be_a_dry_run(sim, client):
    from imagen4_jupyter import InvalidRequestError

    with pytest.raises(InvalidRequestError, match=r"Item 0 \('a'\): Imagen 4 Ultra \(ultra\) makes one image"):
        prompt_seed_grid(["a", "b"], [1, 2], client=client, model="ultra", num_images=2, progress=False)
    plan = prompt_seed_grid(["a", "b"], [1, 2], client=client, model="ultra", dry_run=True)
    assert plan.to_create == 4 and plan.credits == 48
    assert sim.count("createTask") == 0


def test_contact_sheet_captions_name_the_model_when_a_sheet_mixes_them(sim, client):
    from imagen4_jupyter.research.sheet import compose

    mixed = generate_many([{"prompt": "x", "model": "fast"}, {"prompt": "x", "model": "ultra"}], client=client,
                          progress=False)
    image, layout = compose(mixed, cell_size=64)
    assert layout.caption_texts == [["fast", "ultra"]]
    for box in layout.captions[0]:
        assert box is not None and ink_in(image, box) > 10  # the name is drawn under the cell
        assert box[1] == layout.cells[0][0][3]
    plain, no_caps = compose(mixed, cell_size=64, captions=False)
    assert no_caps.captions == [] and plain.height < image.height
    one_model = generate_many(["p", "q"], client=client, progress=False)
    assert compose(one_model, cell_size=64)[1].captions == []
    assert compose(one_model, cell_size=64, captions=True)[1].caption_texts == [["standard", "standard"]]
    _, custom = compose(one_model, cell_size=64, captions=["left", None])
    assert custom.caption_texts == [["left", None]] and custom.captions[0][1] is None
    with pytest.raises(ValueError, match="3 captions for 2 cells"):
        compose(one_model, cell_size=64, captions=["a", "b", "c"])
    mixed_sheet = contact_sheet(mixed, cell_size=64)
    assert shown(mixed_sheet)[1]["imagen4"]["models"] == [["google/imagen4-fast", "google/imagen4-ultra"]]
