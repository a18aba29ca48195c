"""Figure 5: saved notebook size per embed mode: 20 cells of 4 images at 1024x1024, run headless by nbclient.

The notebook is executed as `jupyter nbconvert --execute` / papermill would (nbclient, cells block until their
images are in), against the simulator at image_scale 1.0 (1:1 images are 1024x1024), once per embed mode,
then written with nbformat; the size of that file is the figure. Two image sources:
  smooth: the simulator's own pictures (colour fields; their PNGs are ~0.4 MB, much smaller than real ones),
  detailed: the same pictures with sensor-like noise added, so each PNG is ~1.8 MB, the size of real
            Imagen 4 1024x1024 PNGs (served by the same simulator over HTTP; only the pixels differ).
Per image = the notebook's size divided by the number of images (cards and metadata included).
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import nbformat

from imagen4_jupyter.simulator import Simulator
from imagen4_jupyter.simulator import images as SI

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-key"


def _detailed_renderer(original):
    def render(key: str, size: tuple[int, int], caption: str = "") -> bytes:
        from PIL import Image, ImageChops

        base = Image.open(io.BytesIO(original(key, size, caption))).convert("RGB")
        noise = Image.effect_noise(size, 8).convert("RGB")
        out = io.BytesIO()
        ImageChops.add(base, noise, 1.0, -128).save(out, "PNG")
        return out.getvalue()

    return render


def run_notebook(sim_url: str, workdir: Path, cells: int, images: int, embed: str | None) -> tuple[int, dict]:
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    setup = ["%load_ext imagen4_jupyter", "%config Imagen4Magics.poll_interval = 0.05"]
    if embed is not None:
        setup.append(f"%config Imagen4Magics.embed = '{embed}'")
    nb.cells = [nbformat.v4.new_code_cell("\n".join(setup))]
    nb.cells += [nbformat.v4.new_code_cell(f"%%imagen4 -n {images} -s {i}\nA harbour at dusk, study {i}")
                 for i in range(cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    env = dict(os.environ, APIKLEY_BASE_URL=sim_url, APIKLEY_API_KEY=KEY, IPYTHONDIR=str(workdir / ".ipython"),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    env.pop("JPY_SESSION_NAME", None)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    client.execute(env=env)
    path = workdir / "out.ipynb"
    nbformat.write(nb, path)
    outs = [o for c in nb.cells[1:] for o in c.get("outputs", [])]
    imgs = [o for o in outs if o.get("output_type") == "display_data" and "imagen4" in o.get("metadata", {})]
    errors = [o for o in outs if o.get("output_type") == "error"]
    sizes = {(o["metadata"]["imagen4"]["width"], o["metadata"]["imagen4"]["height"]) for o in imgs}
    originals = [o["metadata"]["imagen4"]["size"] for o in imgs]
    return path.stat().st_size, {"images": len(imgs), "errors": len(errors), "pixel_sizes": sorted(sizes),
                                 "original_bytes": sum(originals) / max(1, len(originals))}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cells", type=int, default=20)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    cells, n = (2, 2) if args.quick else (args.cells, args.images)
    sources = ("smooth",) if args.quick else ("smooth", "detailed")
    modes = (("preview (default)", None), ("full", "full"), ("none", "none"))
    rows = []
    original = SI.render_png
    try:
        for source in sources:
            SI.render_png = original if source == "smooth" else _detailed_renderer(original)
            with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.05), generation_time=(0.1, 0.2),
                           image_scale=1.0) as sim:
                for label, embed in modes:
                    with tempfile.TemporaryDirectory() as tmp:
                        t = time.perf_counter()
                        size, info = run_notebook(sim.url, Path(tmp), cells, n, embed)
                        rows.append({"source": source, "mode": label, "bytes": size, "seconds":
                                     time.perf_counter() - t, **info})
    finally:
        SI.render_png = original
    total = cells * n
    print(f"Notebook size: {cells} cells x {n} images (1024x1024), saved after a headless nbclient run")
    print(f"{'images':9} {'embed mode':18} {'notebook':>10} {'per image':>10} {'original PNG':>13} {'goal':>10}")
    for r in rows:
        goal = "<= 300 KB" if r["mode"].startswith("preview") else ""
        print(f"{r['source']:9} {r['mode']:18} {r['bytes'] / 1e6:8.2f}MB {r['bytes'] / total / 1e3:8.1f}KB "
              f"{r['original_bytes'] / 1e3:11.0f}KB {goal:>10}")
    bad = [r for r in rows if r["images"] != total or r["errors"] or r["pixel_sizes"] != [(1024, 1024)]]
    print(f"every run embedded/listed {total} images of 1024x1024 and no errors: {'yes' if not bad else 'NO'} "
          f"{[(r['source'], r['mode'], r['images'], r['errors'], r['pixel_sizes']) for r in bad] if bad else ''}")
    return {"rows": rows, "images": total, "ok": not bad}


if __name__ == "__main__":
    main()
