"""A screenshot of the real `fssam2 serve` page, as a user sees it after their first click.

The real command (`fssam2 serve`, its default model and preloaded example) in its own process,
Debian's headless Chromium driven by Playwright: a second support is uploaded (another image of the
example's class, from the synthetic benchmark) and given by one click on its object, then Segment
is pressed, and once the masks are on the page the whole page is saved as a PNG (default
docs/serve.png, a new file: an existing one is kept unless --replace).

    python experiments/serve_screenshot.py [--output docs/serve.png] [--replace]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from fssam2.serve import EXAMPLE_CLASSES, png_bytes
from fssam2.synthetic import SyntheticBenchmark
from serve_bench import ROOT, chromium_page, segment_once, served


def click_support(page, image: Path, x: int, y: int) -> None:
    """Upload `image` as a support, click once on pixel (x, y) and add it."""
    page.set_input_files("#support-file input[type=file]", str(image))
    page.get_by_role("tab", name="Clicks").click()
    view = page.locator("#click-view img")
    page.wait_for_function("() => document.querySelector('#click-view img')?.naturalWidth > 0")
    left, top, width, height, natural = view.evaluate(
        "e => {const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height, e.naturalWidth]}"
    )
    scale, enlarged = min(width, height) / natural, natural / 128  # the view is the image enlarged
    page.mouse.click(left + (width - natural * scale) / 2 + (x + 0.5) * enlarged * scale,
                     top + (height - natural * scale) / 2 + (y + 0.5) * enlarged * scale)  # fmt: skip
    page.wait_for_function("() => document.querySelector('#fssam2-status').innerText.includes('Clicks: [[')")
    page.click("#add-support")
    page.wait_for_function("() => document.querySelector('#fssam2-status').innerText.includes('Support 2 added')")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "serve.png")
    parser.add_argument("--replace", action="store_true", help="write over an existing --output")
    opts = parser.parse_args()
    if opts.output.exists() and not opts.replace:
        raise SystemExit(f"{opts.output} exists: pass --replace to write over it, or choose another --output.")
    class_id = EXAMPLE_CLASSES[0]  # the preloaded example's class
    image, label = SyntheticBenchmark(family="hue").render("test", 100, top_class=class_id)
    ys, xs = np.nonzero(label == class_id)
    centre = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    with tempfile.TemporaryDirectory() as folder, served() as (url, _), chromium_page(width=1280, height=900) as page:
        support = Path(folder) / f"hue{class_id}_another.png"
        support.write_bytes(png_bytes(image))
        page.goto(url)
        page.wait_for_selector("#segment")
        click_support(page, support, int(xs[centre]), int(ys[centre]))
        segment_once(page, 1)
        page.wait_for_timeout(1000)  # the galleries' images load after the status
        page.screenshot(path=str(opts.output), full_page=True)
    print(f"wrote {opts.output}")


if __name__ == "__main__":
    main()
