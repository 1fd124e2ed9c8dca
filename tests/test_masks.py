"""One rule for binary masks everywhere (folder dataset, `fssam2 segment`): any non-zero value is
the object, whatever the PNG's format; a dataset whose masks come out empty is refused."""

import numpy as np
import pytest
import torch
from PIL import Image

from fssam2 import InputError
from fssam2.benchmarks import FolderDataModule
from fssam2.segment import read_mask
from fssam2.synthetic import SyntheticBenchmark

H, W = 40, 48
OBJECT = np.zeros((H, W), bool)
OBJECT[8:30, 10:40] = True


def voc_palette() -> list[int]:
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def mask_images() -> dict[str, Image.Image]:
    """The same object in the mask formats people save."""
    obj = OBJECT
    palette = Image.fromarray(np.where(obj, 2, 0).astype(np.uint8))  # VOC "bicycle", index 2: (0, 128, 0)
    palette.putpalette(voc_palette())  # makes it a "P" image
    green = np.zeros((H, W, 3), np.uint8)
    green[obj] = (0, 255, 0)
    opaque = np.full((H, W, 4), 255, np.uint8)
    opaque[..., :3] = 0
    opaque[obj, :3] = (0, 0, 200)
    cutout = np.full((H, W, 4), 255, np.uint8)  # white everywhere, the alpha is the mask
    cutout[..., 3] = np.where(obj, 255, 0)
    black_cutout = np.zeros((H, W, 4), np.uint8)  # a black object on a transparent background
    black_cutout[..., 3] = np.where(obj, 255, 0)
    la = np.stack([np.full((H, W), 128, np.uint8), np.where(obj, 255, 0).astype(np.uint8)], axis=2)
    return {
        "zero_one": Image.fromarray(obj.astype(np.uint8)),
        "zero_255": Image.fromarray(obj.astype(np.uint8) * 255),
        "palette": palette,
        "green_rgb": Image.fromarray(green),
        "blue_rgba_opaque": Image.fromarray(opaque),
        "white_cutout": Image.fromarray(cutout),
        "black_cutout": Image.fromarray(black_cutout),
        "gray_la": Image.fromarray(la),
        "one_bit": Image.fromarray(obj).convert("1"),
        "sixteen_bit": Image.fromarray(obj.astype(np.uint16) * 3),
    }


@pytest.fixture
def mask_files(tmp_path):
    paths = {}
    for name, im in mask_images().items():
        paths[name] = tmp_path / f"{name}.png"
        im.save(paths[name])
    return paths


def test_every_mask_format_reads_as_drawn(mask_files):
    from fssam2.benchmarks import read_binary_mask

    for name, path in mask_files.items():
        assert np.array_equal(read_binary_mask(path), OBJECT), name
        assert np.array_equal(read_mask(path), OBJECT), name  # fssam2 segment's support masks


def write_dataset(root, masks_of):
    """Three classes of 3 images; masks_of(k, j) gives the PIL mask of image j of class k."""
    bench = SyntheticBenchmark(image_size=48)
    for k, name in enumerate(["ant", "bee", "cow"]):
        (root / name).mkdir(parents=True)
        for j in range(3):
            image, _ = bench.render("train", 10 * k + j, top_class=k + 1)
            Image.fromarray(image[:H]).save(root / name / f"p{j}.jpg")
            masks_of(k, j).save(root / name / f"p{j}.png")


@pytest.mark.parametrize("kind", ["zero_one", "palette", "green_rgb", "white_cutout"])
def test_folder_dataset_episodes_see_the_objects(tmp_path, kind):
    """0/1, palette and coloured masks used to read as empty (pixel >= 128 of the first channel):
    training and testing then ran on empty targets."""
    write_dataset(tmp_path, lambda k, j: mask_images()[kind])
    dm = FolderDataModule(root=str(tmp_path), test_classes=["bee"], shot=1)
    dm.image_size = 32
    for split in ("test", "train"):
        item = dm.dataset(split)[(0, 0)]
        assert item["support_masks"].sum() > 0 and (item["query_mask"] == 1).sum() > 0, (split, kind)
        assert (item["query_target"] == 1).sum() == OBJECT.sum()


def test_folder_dataset_with_empty_masks_is_refused_naming_the_file(tmp_path):
    write_dataset(tmp_path, lambda k, j: Image.fromarray(np.zeros((H, W), np.uint8)))
    with pytest.raises(InputError, match=r"Mask .*ant[/\\]p0\.png has no object pixel"):
        FolderDataModule(root=str(tmp_path), test_classes=["bee"]).episodes("test")


# images of other depths than 8 bits
GRADIENT = (np.arange(H * W, dtype=np.uint32).reshape(H, W) * 65535 // (H * W - 1)).astype(np.uint16)


def sixteen_bit_files(folder):
    """The same 16-bit grey gradient as TIFF and PNG, and a 16-bit colour TIFF (written by OpenCV)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(GRADIENT).save(folder / "grey16.tif")
    Image.fromarray(GRADIENT).save(folder / "grey16.png")
    colour = np.stack([GRADIENT, GRADIENT // 2, 65535 - GRADIENT], axis=2)
    cv2.imwrite(str(folder / "colour16.tif"), colour[..., ::-1])  # OpenCV writes BGR
    return colour


def test_sixteen_bit_images_keep_their_high_byte(tmp_path):
    """16-bit TIFF (and PNG) images read as pure white: Pillow's convert("RGB") clips them at 255."""
    from fssam2.benchmarks import read_image

    colour = sixteen_bit_files(tmp_path)
    high = (GRADIENT >> 8).astype(np.uint8)
    for name in ("grey16.tif", "grey16.png"):
        image = read_image(tmp_path / name)
        assert image.dtype == np.uint8 and image.shape == (H, W, 3), name
        assert np.array_equal(image, np.repeat(high[..., None], 3, axis=2)), name
    assert np.array_equal(read_image(tmp_path / "colour16.tif"), (colour >> 8).astype(np.uint8))
    Image.fromarray(GRADIENT.astype(np.float32) / 65535).save(tmp_path / "float.tif")
    assert np.abs(read_image(tmp_path / "float.tif")[..., 0].astype(int) - high).max() <= 1


def test_images_of_unknown_range_are_refused_naming_the_file(tmp_path):
    write_dataset(tmp_path, lambda k, j: Image.fromarray(OBJECT.astype(np.uint8) * 255))
    bad = tmp_path / "bee" / "p0.tif"
    (tmp_path / "bee" / "p0.jpg").unlink()
    Image.fromarray(np.full((H, W), 300.0, np.float32)).save(bad)
    dm = FolderDataModule(root=str(tmp_path), test_classes=["bee"], shot=1)
    dm.image_size = 32
    with pytest.raises(InputError, match=rf"Image {bad} holds float values in \[300, 300\], not \[0, 1\]"):
        dm.dataset("test")[(0, -1)]


def test_sixteen_bit_images_through_a_folder_dataset(tmp_path):
    """End to end: a folder dataset of 16-bit TIFFs gives the episodes of the same images at 8 bits."""
    bench = SyntheticBenchmark(image_size=48)
    roots = {bits: tmp_path / f"bits{bits}" for bits in (8, 16)}
    for k, name in enumerate(["ant", "bee"]):
        for j in range(3):
            image, label = bench.render("train", 10 * k + j, top_class=k + 1)
            mask = Image.fromarray(np.where(label == k + 1, 255, 0).astype(np.uint8))
            wide = image[..., 1].astype(np.uint16) * 257  # the green channel, as 16-bit grey
            for bits, root in roots.items():
                (root / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(wide if bits == 16 else image[..., 1]).save(root / name / f"p{j}.tif")
                mask.save(root / name / f"p{j}.png")
    items = {}
    for bits, root in roots.items():
        dm = FolderDataModule(root=str(root), test_classes=["bee"], shot=1)
        dm.image_size = 32
        items[bits] = [dm.dataset("test")[(i, -1)] for i in range(3)]
    for eight, sixteen in zip(items[8], items[16], strict=True):
        assert sixteen["query_image"].float().std() > 5  # not a white square (0..255 pixels)
        assert torch.equal(eight["query_image"], sixteen["query_image"])
        assert torch.equal(eight["support_images"], sixteen["support_images"])


# masks of more than two values
def jpeg_compressed(mask: np.ndarray, path) -> None:
    """A 0/255 mask saved as JPEG once and then as PNG, as happens to masks passed around."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="JPEG", quality=60)
    buffer.seek(0)
    Image.open(buffer).convert("L").save(path)


def test_jpeg_compressed_masks_warn_naming_the_file_and_are_thresholded(tmp_path):
    """A mask that went through JPEG holds many values: any non-zero pixel used to be the object,
    so the compression noise around the object was segmented too, without a word."""
    from fssam2.benchmarks import read_binary_mask

    write_dataset(tmp_path, lambda k, j: Image.fromarray(OBJECT.astype(np.uint8) * 255))
    noisy = tmp_path / "bee" / "p1.png"
    jpeg_compressed(OBJECT.astype(np.uint8) * 255, noisy)
    values = np.unique(np.asarray(Image.open(noisy)))
    assert len(values) > 2 and ((np.asarray(Image.open(noisy)) != 0) != OBJECT).sum() > 20  # the noise is real
    with pytest.warns(UserWarning, match=rf"Mask {noisy} holds {len(values)} distinct values, not two") as caught:
        dm = FolderDataModule(root=str(tmp_path), test_classes=["bee"], shot=1)
        dm.episodes("test")
    assert len([w for w in caught if "distinct values" in str(w.message)]) == 1  # one line for the dataset
    with pytest.warns(UserWarning, match="distinct values"):
        mask = read_binary_mask(noisy)
    assert (mask != OBJECT).sum() <= 4  # half the largest value: at most a few edge pixels differ
    dm.image_size = 32
    item = next(dm.dataset("test")[(i, -1)] for i in range(3) if dm.dataset("test")[(i, -1)]["query"] == "bee/p1")
    assert abs(int((item["query_target"] == 1).sum()) - int(OBJECT.sum())) <= 4


# the data path warns of nothing it does itself
def test_reading_a_folder_dataset_warns_of_no_read_only_array(tmp_path):
    """Every run warned "The given NumPy array is not writable" (torch.from_numpy of a PIL array in
    the decoded-image cache). Torch warns once a process, hence a process of its own."""
    import subprocess
    import sys

    write_dataset(tmp_path, lambda k, j: Image.fromarray(OBJECT.astype(np.uint8) * 255))
    script = (
        "import warnings\n"
        "warnings.filterwarnings('error', message='.*not writable')\n"
        "from fssam2.benchmarks import FolderDataModule\n"
        f"dm = FolderDataModule(root={str(tmp_path)!r}, test_classes=['bee'], shot=1, num_workers=0)\n"
        "dm.image_size = 32\n"
        "for split in ('test', 'val', 'train'):\n"
        "    dm.dataset(split)[(0, -1)]\n"
    )
    env = {**__import__("os").environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and "not writable" not in done.stderr, done.stderr


def test_data_workers_default_to_the_cores_this_process_may_use(tmp_path, monkeypatch):
    """4 workers on a 2-core machine oversubscribed it; the default now comes from the machine."""
    import os

    write_dataset(tmp_path, lambda k, j: Image.fromarray(OBJECT.astype(np.uint8) * 255))
    for cores, workers in ((1, 0), (2, 1), (3, 2), (16, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _, n=cores: set(range(n)), raising=False)
        assert FolderDataModule(root=str(tmp_path)).num_workers == workers, cores
        assert FolderDataModule(root=str(tmp_path), num_workers=3).num_workers == 3  # as given
    with pytest.raises(InputError, match="data.num_workers=-1 must be >= 0"):
        FolderDataModule(root=str(tmp_path), num_workers=-1)
