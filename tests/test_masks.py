"""One rule for binary masks everywhere (folder dataset, `fssam2 segment`): any non-zero value is
the object, whatever the PNG's format; a dataset whose masks come out empty is refused."""

import numpy as np
import pytest
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
