"""`fssam2 serve`: the page's functions (their masks are `fssam2 segment`'s and `Segmenter`'s, bit for
bit), its messages for bad input, and the real page in Debian's Chromium driven by Playwright."""

import json
import os
import shlex
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fssam2 import Segmenter
from fssam2.benchmarks import read_image
from fssam2.cli import run_cli
from fssam2.errors import InputError
from fssam2.serve import DEFAULT_ADAPTER, Limits, Service, Support, example_episodes, png_bytes
from helpers import one_line_error


@pytest.fixture(scope="module")
def service():
    """The default model of `fssam2 serve`: the packaged tiny SAM2 with the packaged hue adapter."""
    service = Service.from_options()
    yield service
    service.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Two example episodes of the synthetic benchmark as files: supports, their masks, queries (one a JPEG)."""
    folder = tmp_path_factory.mktemp("serve_files")
    out = {}
    for n, (support, queries) in enumerate(list(example_episodes().values())[:2], start=1):
        out[f"support{n}"] = folder / f"support{n}.png"
        out[f"support{n}"].write_bytes(png_bytes(support.image))
        out[f"mask{n}"] = folder / f"mask{n}.png"
        out[f"mask{n}"].write_bytes(png_bytes(support.note.astype(np.uint8) * 255))
        for q, (_, image) in enumerate(queries[:2], start=1):
            out[f"query{n}{q}"] = folder / f"query{n}{q}.png"
            out[f"query{n}{q}"].write_bytes(png_bytes(image))
    Image.open(out["query12"]).save(folder / "query12.jpg", quality=80)
    out["query12"] = folder / "query12.jpg"
    return out


def painted(mask: np.ndarray) -> dict:
    """An ImageEditor value whose one layer is painted (alpha > 0) where `mask` is set."""
    layer = np.zeros((*mask.shape, 4), np.uint8)
    layer[mask] = (255, 40, 40, 178)
    return {"background": None, "layers": [layer], "composite": None}


def centre(mask: np.ndarray) -> list[int]:
    """A pixel of the mask near its centre of mass."""
    ys, xs = np.nonzero(mask)
    i = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
    return [int(xs[i]), int(ys[i])]


def test_page_masks_equal_segment_and_segmenter_bit_for_bit(service, files, tmp_path, monkeypatch):
    """Supports by a brush mask, clicks and a dragged box; queries PNG and JPEG: the page's masks are
    Segmenter's for the same inputs, and the zip's supports with its README's command give the same
    masks through `fssam2 segment`."""
    image1, image2 = (
        service.read_upload(files["support1"], "Support"),
        service.read_upload(files["support2"], "Support"),
    )
    mask1, mask2 = read_image(files["mask1"])[..., 0] > 0, read_image(files["mask2"])[..., 0] > 0
    brush, how = service.annotation(image1, "brush", brush=painted(mask1))
    assert how == "brush mask" and np.array_equal(brush, mask1)
    x, y = centre(mask2)
    clicks, _ = service.annotation(image2, "clicks", clicks=[[x, y, 1], [2, 2, 0]])
    assert clicks == {"points": [[x, y, 1], [2, 2, 0]]}
    stroke = np.zeros_like(mask2)
    ys, xs = np.nonzero(mask2)
    stroke[ys.min() : ys.max() + 1, xs.min()] = stroke[ys.min(), xs.min() : xs.max() + 1] = True  # an L-shaped drag
    box, _ = service.annotation(image2, "box", box=painted(stroke))
    assert box == {"box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]}

    supports: list[Support] = []
    for name, image, note in (
        ("support1.png", image1, brush),
        ("support2.png", image2, clicks),
        ("support2.png", image2, box),
    ):
        source = files["support1"] if name == "support1.png" else files["support2"]
        supports = service.add_support(supports, Support(name, image, note, "test", source=source))
    queries = [files["query11"], files["query12"], files["query21"]]
    results, supports = service.segment(supports, queries)
    assert all(r.mask.any() for r in results) and [r.name for r in results] == [
        "query11.png",
        "query12.jpg",
        "query21.png",
    ]

    seg = Segmenter.from_pretrained(adapter=DEFAULT_ADAPTER)
    seg.set_support([image1, image2, image2], [brush, clicks, box])
    for result, query in zip(results, queries, strict=True):
        assert np.array_equal(result.mask, seg.predict(read_image(query)))
    for support, seen in zip(supports, seg.support_masks, strict=True):
        assert np.array_equal(support.seen, seen)

    with zipfile.ZipFile(service.archive(supports, results)) as archive:
        archive.extractall(tmp_path / "zip")
    command = (tmp_path / "zip" / "README.txt").read_text().split("command line:\n", 1)[1].replace("\\\n", " ")
    args = shlex.split(command.replace("YOUR_QUERY_IMAGES", " ".join(map(str, queries))))
    assert args[:2] == ["fssam2", "segment"] and "--adapter" in args
    monkeypatch.chdir(tmp_path / "zip")
    run_cli(args[1:])
    for result in results:
        stem = Path(result.name).stem
        ours = np.asarray(Image.open(tmp_path / "zip" / "masks" / f"{stem}.png"))
        assert np.array_equal(ours, result.mask.astype(np.uint8) * 255)
        assert np.array_equal(np.asarray(Image.open(tmp_path / "zip" / "masks_again" / f"{stem}.png")), ours)


def test_support_notes_from_files_and_a_canvas_of_another_size(service, files, tmp_path):
    image = service.read_upload(files["support1"], "Support")
    mask = read_image(files["mask1"])[..., 0] > 0
    note, how = service.annotation(image, "file", mask_file=files["mask1"])
    assert how == "mask file" and np.array_equal(note, mask)
    prompt = tmp_path / "p.json"
    prompt.write_text(json.dumps({"points": [centre(mask) + [1]]}))
    assert service.annotation(image, "file", mask_file=prompt)[0] == {"points": [centre(mask) + [1]]}
    big = np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1)  # a canvas twice the image's size
    assert np.array_equal(service.annotation(image, "brush", brush=painted(big))[0], mask)


def bad_inputs(files: dict[str, Path], folder: Path) -> dict[str, tuple]:
    """name -> (what to call on a Service, the words its message must hold)."""
    junk = folder / "photo.png"
    junk.write_text("not an image")
    blank = folder / "blank.png"
    Image.fromarray(np.zeros((128, 128), np.uint8)).save(blank)
    outside = folder / "outside.json"
    outside.write_text(json.dumps({"box": [10, 10, 500, 60]}))
    not_adapter = folder / "model.safetensors"
    not_adapter.write_bytes(b"\x00" * 64)

    def annotate(mode, **kw):
        return lambda s: s.annotation(s.read_upload(files["support1"], "Support image"), mode, **kw)

    return {
        "unreadable": (lambda s: s.read_upload(junk, "Support image"), "photo.png is not an image this page can read"),
        "huge file": (lambda s: Service(s.segmenter, "", s.base, limits=Limits(max_file_mb=0.001)).read_upload(files["query11"], "Query"), "more than this page's 0.001 MB"),
        "huge image": (lambda s: Service(s.segmenter, "", s.base, limits=Limits(max_megapixels=0.01)).read_upload(files["query11"], "Query"), "128x128 pixels, more than this page's 0.01 megapixels"),
        "no support": (lambda s: s.segment([], [files["query11"]]), "No support yet"),
        "no query": (lambda s: s.segment([Support("a", np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), bool), "")], []), "No query image"),
        "empty brush": (annotate("brush", brush=painted(np.zeros((128, 128), bool))), "brush mask is empty"),
        "empty mask file": (annotate("file", mask_file=blank), "has no foreground"),
        "box outside": (annotate("file", mask_file=outside), "reaches outside the 128x128 image"),
        "no object click": (annotate("clicks", clicks=[[5, 5, 0]]), "No object click"),
        "not an adapter": (lambda s: s.load_adapter(not_adapter), "model.safetensors is not an fssam2 adapter file"),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case",
    ["unreadable", "huge file", "huge image", "no support", "no query", "empty brush", "empty mask file",
     "box outside", "no object click", "not an adapter"],
)  # fmt: skip
def test_bad_input_is_one_message_naming_no_server_path(service, files, tmp_path, case):
    call, words = bad_inputs(files, tmp_path)[case]
    model = service.segmenter
    with pytest.raises(InputError) as err:
        call(service)
    message = str(err.value)
    assert (
        words in message
        and "\n" not in message
        and str(tmp_path) not in message
        and str(files["support1"].parent) not in message
    )
    assert service.segmenter is model  # nothing changed: the server goes on with its model
    results, _ = service.segment(
        [Support("s.png", read_image(files["support1"]), read_image(files["mask1"])[..., 0] > 0, "")],
        [files["query11"]],
    )
    assert results[0].mask.any()


def test_too_many_supports_and_an_adapter_on_another_base(service, files, tmp_path):
    image, mask = read_image(files["support1"]), read_image(files["mask1"])[..., 0] > 0
    one = Service(service.segmenter, "", service.base, limits=Limits(max_supports=1))
    supports = one.add_support([], Support("s.png", image, mask, ""))
    with pytest.raises(InputError, match="at most 1 supports"):
        one.add_support(supports, Support("t.png", image, mask, ""))
    other = Service(service.segmenter, "", ("sam2.1_hiera_t", None))
    with pytest.raises(InputError, match="trained on fssam2_tiny, but this server runs sam2.1_hiera_t"):
        other.load_adapter(Path(str(__import__("fssam2.hub").hub.packaged_adapter(DEFAULT_ADAPTER))))


def test_serve_cli_refuses_bad_options_in_one_line(tmp_path, capsys):
    import socket

    junk = tmp_path / "junk.safetensors"
    junk.write_text("x")
    one_line_error(capsys, ["serve", "--adapter", str(junk)], "is corrupt or not a safetensors file")
    one_line_error(capsys, ["serve", "--max-file-mb", "0"], "--max-file-mb must be positive")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line_error(capsys, ["serve", "--port", str(port)], f"Cannot serve on 127.0.0.1:{port}")


def test_an_uploaded_adapter_is_served_on_the_servers_base(files, tmp_path):
    """A server of plain SAM2 (no adapter) given the packaged adapter's file on the page serves it:
    its masks are then Segmenter's with that adapter."""
    from fssam2 import hub

    upload = tmp_path / "my_adapter.safetensors"
    shutil.copy(hub.packaged_adapter(DEFAULT_ADAPTER), upload)
    plain = Service.from_options(sam2="fssam2_tiny", sam2_checkpoint="fssam2_tiny_pointers")
    try:
        assert "no adapter" in plain.model_text
        text = plain.load_adapter(upload)
        assert "adapter my_adapter.safetensors" in text and str(tmp_path) not in text
        support = Support("s.png", read_image(files["support1"]), read_image(files["mask1"])[..., 0] > 0, "")
        results, _ = plain.segment([support], [files["query11"]])
    finally:
        plain.close()
    seg = Segmenter.from_pretrained(adapter=DEFAULT_ADAPTER)
    seg.set_support([support.image], [support.note])
    assert np.array_equal(results[0].mask, seg.predict(read_image(files["query11"])))


def test_the_page_takes_no_typed_text(service):
    """Nothing typed into the page is read as a path: it has no text box, and its one menu takes only its own choices."""
    gr = pytest.importorskip("gradio", reason="fssam2[serve] (Gradio) is not installed")
    from fssam2.serve import build_page

    page = build_page(service, {})
    kinds = {type(block).__name__ for block in page.blocks.values()}
    assert not kinds & {"Textbox", "Code", "Number", "MultimodalTextbox", "Chatbot"}, kinds
    menus = [block for block in page.blocks.values() if isinstance(block, gr.Dropdown)]
    assert menus and not any(menu.allow_custom_value for menu in menus)


# The page in a browser: Debian's Chromium (apt-get install chromium; .ci/run installs it), driven by Playwright.
CHROMIUM = shutil.which("chromium")


def listening(port: int) -> list[str]:
    """The local addresses (hex, as /proc/net/tcp writes them) of the sockets listening on `port`."""
    rows = [line.split() for name in ("tcp", "tcp6") for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]]
    return [row[1].rsplit(":", 1)[0] for row in rows if row[3] == "0A" and int(row[1].rsplit(":", 1)[1], 16) == port]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`fssam2 serve` with no model options (the default model, the examples preloaded), through the real
    CLI in its own process on a free port; stopped after the module. It listens on 127.0.0.1 alone."""
    pytest.importorskip("gradio", reason="fssam2[serve] (Gradio) is not installed")
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path_factory.mktemp("serve_home")
    env = {
        **os.environ,
        "FSSAM2_HOME": str(home / "fssam2"),
        "GRADIO_TEMP_DIR": str(home / "gradio"),
        "HF_HUB_OFFLINE": "1",
    }
    server = subprocess.Popen([sys.executable, "-m", "fssam2.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            assert server.poll() is None, server.stdout.read()
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                time.sleep(0.5)
        assert listening(port) == ["0100007F"]  # 127.0.0.1, nothing else
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "gradio.live" not in server.stdout.read()  # no share link


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's chromium: .ci/run installs it (apt-get install chromium)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium): the browser tests need it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (fssam2[dev]) is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])  # never `playwright install`
        yield browser
        browser.close()


def status_holds(page, words: str, timeout: float = 30_000) -> str:
    page.wait_for_function(
        "w => document.querySelector('#fssam2-status').innerText.includes(w)", arg=words, timeout=timeout
    )
    return page.inner_text("#fssam2-status")


def pick_support(page, path: Path) -> None:
    page.set_input_files("#support-file input[type=file]", str(path))
    status_holds(page, f"Support image {path.name}")


@pytest.mark.slow
def test_browser_supports_by_click_and_brush_give_segmenters_masks(served, browser, files, tmp_path):
    url = served
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(url)
    page.click("#clear-supports")
    status_holds(page, "Supports removed")
    # Support 1 by one click on the object.
    pick_support(page, files["support1"])
    page.get_by_role("tab", name="Clicks").click()
    view = page.locator("#click-view img")
    view.wait_for()
    left, top, width, height, natural = view.evaluate(
        "e => {const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height, e.naturalWidth]}"
    )
    scale = min(width, height) / natural  # the view is square, enlarged natural / 128 times
    enlarged = natural / 128
    x, y = centre(read_image(files["mask1"])[..., 0] > 0)
    page.mouse.click(left + (width - natural * scale) / 2 + (x + 0.5) * enlarged * scale, top + (height - natural * scale) / 2 + (y + 0.5) * enlarged * scale)  # fmt: skip
    status_holds(page, "Clicks: [[")
    page.click("#add-support")
    status_holds(page, "Support 1 added (clicks (1 object, 0 background))")
    # Support 2 by a brush stroke over the object.
    pick_support(page, files["support2"])
    page.get_by_role("tab", name="Brush or box").click()
    page.locator("#brush-editor button[aria-label=Brush]").click()
    canvas = page.locator("#brush-editor canvas").first.bounding_box()
    zoom = float(page.locator("#brush-editor").inner_text().split("%")[0].split()[-1]) / 100
    mask2 = read_image(files["mask2"])[..., 0] > 0
    bx, by = centre(mask2)

    def at(px: float, py: float) -> tuple[float, float]:
        return canvas["x"] + canvas["width"] / 2 + (px - 64) * zoom, canvas["y"] + canvas["height"] / 2 + (
            py - 64
        ) * zoom

    page.mouse.move(*at(bx - 3, by))
    page.mouse.down()
    for step in range(1, 4):
        page.mouse.move(*at(bx - 3 + 2 * step, by + (step % 2)))
    page.mouse.up()
    page.click("#add-support")
    status_holds(page, "Support 2 added (brush mask)")
    # Two queries, one a JPEG.
    page.locator("#query-files button[aria-label='Clear']").click()
    page.set_input_files("#query-files input[type=file]", [str(files["query11"]), str(files["query12"])])
    page.wait_for_function("document.querySelectorAll('#query-files a').length >= 2")
    page.click("#segment")
    status_holds(page, "Segmented 2 queries with 2 supports")
    archive = tmp_path / "masks.zip"
    archive.write_bytes(page.request.get(page.locator("#download a").first.get_attribute("href")).body())
    page.close()

    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "zip")
    supports = tmp_path / "zip" / "supports"
    click = json.loads((supports / "1_support1_prompt.json").read_text())
    assert click == {"points": [[x, y, 1]]}  # the pixel clicked, in the image's own pixels
    brushed = read_image(supports / "2_support2_mask.png")[..., 0] > 0
    assert brushed[by, bx] and brushed.sum() < brushed.size / 2  # a stroke over the object, not the image
    seg = Segmenter.from_pretrained(adapter=DEFAULT_ADAPTER)
    seg.set_support(
        [read_image(supports / "1_support1.png"), read_image(supports / "2_support2.png")], [click, brushed]
    )
    for query in (files["query11"], files["query12"]):
        page_mask = np.asarray(Image.open(tmp_path / "zip" / "masks" / f"{query.stem}.png"))
        assert page_mask.shape == (128, 128) and set(np.unique(page_mask)) <= {0, 255}
        assert np.array_equal(page_mask > 0, seg.predict(read_image(query)))


@pytest.mark.slow
def test_browser_bad_upload_is_a_message_and_the_page_goes_on(served, browser, files, tmp_path):
    url = served
    junk = tmp_path / "holiday.png"
    junk.write_text("this is no image")
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(url)
    page.set_input_files("#support-file input[type=file]", str(junk))
    message = status_holds(page, "Error:")
    assert "holiday.png is not an image this page can read" in message and str(tmp_path) not in message
    page.click("#segment")  # the preloaded example: the server still serves
    status_holds(page, "Segmented 3 queries with 1 support in")
    page.close()


def test_the_packaged_adapter_is_pinned_and_loads_by_name(monkeypatch):
    from fssam2 import hub

    path = hub.packaged_adapter(DEFAULT_ADAPTER)
    assert path.stat().st_size < 1_000_000 and hub.sha256_of(path) == hub.PACKAGED_ADAPTERS[DEFAULT_ADAPTER].sha256
    entry = hub.PACKAGED_ADAPTERS[DEFAULT_ADAPTER]
    monkeypatch.setitem(hub.PACKAGED_ADAPTERS, DEFAULT_ADAPTER, entry._replace(sha256="0" * 64))
    with pytest.raises(InputError, match="Packaged adapter .* has SHA-256 .* expected 0{64}"):
        Segmenter.from_pretrained(adapter=DEFAULT_ADAPTER)


# A training-free method served: GF-SAM on the tiny SAM2, SAM2's own features standing in for DINOv2.
GFSAM_OPTIONS = dict(sam2="fssam2_tiny", sam2_checkpoint="fssam2_tiny_pointers", image_size=128,
                     method="fssam2.methods.GFSAM", method_args={"encoder": "sam2"})  # fmt: skip


def zip_command(service: Service, supports, results, folder: Path, queries) -> list[str]:
    """The zip of `results` unpacked into `folder`, and its README's `fssam2 segment` command on `queries`."""
    with zipfile.ZipFile(service.archive(supports, results)) as archive:
        archive.extractall(folder)
    command = (folder / "README.txt").read_text().split("command line:\n", 1)[1].replace("\\\n", " ")
    args = shlex.split(command.replace("YOUR_QUERY_IMAGES", " ".join(map(str, queries))))
    assert args[:2] == ["fssam2", "segment"]
    return args[1:]


def test_a_gfsam_server_gives_segmenters_masks_and_its_zip_command_gives_them_again(files, tmp_path, monkeypatch):
    gfsam = Service.from_options(**GFSAM_OPTIONS)
    try:
        assert "GFSAM (training-free" in gfsam.model_text and '{"encoder": "sam2"}' in gfsam.model_text
        image1, image2 = read_image(files["support1"]), read_image(files["support2"])
        mask1 = read_image(files["mask1"])[..., 0] > 0
        clicks = {"points": [[*centre(read_image(files["mask2"])[..., 0] > 0), 1]]}
        supports = [Support("support1.png", image1, mask1, "", source=files["support1"]),
                    Support("support2.png", image2, clicks, "", source=files["support2"])]  # fmt: skip
        queries = [files["query11"], files["query12"], files["query21"]]
        results, supports = gfsam.segment(supports, queries)
        args = zip_command(gfsam, supports, results, tmp_path / "zip", queries)
    finally:
        gfsam.close()
    assert args[args.index("--method") + 1] == "fssam2.methods.GFSAM"
    assert json.loads(args[args.index("--method-args") + 1]) == {"encoder": "sam2"}
    seg = Segmenter.from_pretrained(**GFSAM_OPTIONS)
    seg.set_support([image1, image2], [mask1, clicks])
    assert any(r.mask.any() for r in results)
    for result, query in zip(results, queries, strict=True):
        assert np.array_equal(result.mask, seg.predict(read_image(query)))
    monkeypatch.chdir(tmp_path / "zip")
    run_cli(args)
    for result in results:
        again = np.asarray(Image.open(tmp_path / "zip" / "masks_again" / f"{Path(result.name).stem}.png"))
        assert np.array_equal(again, result.mask.astype(np.uint8) * 255)


def test_an_adapter_uploaded_to_a_gfsam_server_is_served_in_its_place(files, tmp_path, monkeypatch):
    """The page serves the uploaded adapter's method as `fssam2 serve --sam2 BASE --adapter FILE` would;
    the zip's command names the adapter, not GF-SAM, and gives the page's masks."""
    from fssam2 import hub

    upload = tmp_path / "my_adapter.safetensors"
    shutil.copy(hub.packaged_adapter(DEFAULT_ADAPTER), upload)
    gfsam = Service.from_options(**GFSAM_OPTIONS)
    try:
        text = gfsam.load_adapter(upload)
        assert text == gfsam.model_text and "adapter my_adapter.safetensors" in text and "GFSAM" not in text
        support = Support("s.png", read_image(files["support1"]), read_image(files["mask1"])[..., 0] > 0, "",
                          source=files["support1"])  # fmt: skip
        results, supports = gfsam.segment([support], [files["query11"]])
        args = zip_command(gfsam, supports, results, tmp_path / "zip", [files["query11"]])
    finally:
        gfsam.close()
    assert "--method" not in args and "--method-args" not in args and "--image-size" not in args
    seg = Segmenter.from_pretrained(adapter=DEFAULT_ADAPTER)
    seg.set_support([support.image], [support.note])
    assert np.array_equal(results[0].mask, seg.predict(read_image(files["query11"])))
    shutil.copy(upload, tmp_path / "zip")  # the command names the uploaded file beside it
    monkeypatch.chdir(tmp_path / "zip")
    run_cli(args)
    again = np.asarray(Image.open(tmp_path / "zip" / "masks_again" / "query11.png"))
    assert np.array_equal(again, results[0].mask.astype(np.uint8) * 255)


def test_serve_cli_refuses_bad_method_options_in_one_line(capsys):
    from helpers import free_port

    port = ["--port", str(free_port())]
    one_line_error(capsys, ["serve", *port, "--method-args", "oops"], "--method-args 'oops' is not JSON")
    one_line_error(capsys, ["serve", *port, "--method", "gfsam"], "did you mean fssam2.methods.GFSAM?")
    one_line_error(capsys, ["serve", *port, "--method", "fssam2.methods.GFSAM", "--adapter", DEFAULT_ADAPTER],
                   "GFSAM has no adapters")  # fmt: skip
