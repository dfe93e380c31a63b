"""Data sources, the held-out split and the one preprocessing definition."""

import os

import numpy as np
import pytest
import torch
from conftest import write_image_folder
from PIL import Image

from alexnet_deploy.data.augmentation import Augmentation
from alexnet_deploy.data.loading import TrainingDataset, batch_loader, default_workers, loader_options
from alexnet_deploy.data.preprocessing import Preprocessing
from alexnet_deploy.data.sources import load_digits, load_image_folder
from alexnet_deploy.data.split import Split
from alexnet_deploy.errors import DeployError


def test_embedded_digits_are_real_labelled_images():
    digits = load_digits()
    assert len(digits) == 1797 and digits.classes == [str(i) for i in range(10)]
    assert digits.image(0).size == (8, 8)
    assert np.bincount(digits.labels).min() > 150


def test_split_is_deterministic_disjoint_stratified_and_covers_everything():
    labels = load_digits().labels
    first, second = Split().indices(labels), Split().indices(labels)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    train, val, cal = (set(first[k].tolist()) for k in ("train", "val", "calibration"))
    assert not (train & val or train & cal or val & cal)
    assert len(train | val | cal) == len(labels)
    assert set(labels[first["calibration"]].tolist()) == set(range(10))
    assert abs(len(cal) / len(labels) - 0.15) < 0.01


def test_split_does_not_depend_on_the_training_seed(tmp_path):
    """Two runs with other --seed values hold out the same images (the split's own seed
    does move them, so the comparison can fail)."""
    from alexnet_deploy.checkpoint import load_checkpoint
    from alexnet_deploy.train.config import TrainConfig
    from alexnet_deploy.train.loop import train

    labels = load_digits().labels
    assert not np.array_equal(Split(seed=0).indices(labels)["val"], Split(seed=1).indices(labels)["val"])
    runs = []
    for seed in (0, 1):
        output = tmp_path / f"seed{seed}.pt"
        train(TrainConfig(output=output, seed=seed, epochs=1, limit=80, width=0.0625, batch_size=16))
        runs.append(load_checkpoint(output))
    first, second = (run.split.indices(labels) for run in runs)
    for name in ("train", "val", "calibration"):
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    trained = [run.state_dict["features.conv1.weight"] for run in runs]
    assert not torch.equal(*trained), "the training seed took effect"


def test_preprocessing_resizes_crops_and_normalises():
    pre = Preprocessing(resize=256, crop=227, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    white = Image.new("RGB", (300, 500), (255, 255, 255))
    out = pre(white)
    assert out.shape == (3, 227, 227) and out.dtype == np.float32
    np.testing.assert_allclose(out, 2.0)  # (1 - 0.5) / 0.25
    assert Preprocessing.from_dict(pre.to_dict()) == pre


def test_augmentation_is_reproducible_and_varies_by_epoch():
    images = load_digits().subset(range(20))
    dataset = TrainingDataset(images, Preprocessing(), Augmentation(), seed=3)
    a, _ = dataset[4]
    b, _ = dataset[4]
    dataset.epoch = 1
    c, _ = dataset[4]
    assert a.shape == (3, 227, 227)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_image_folder_reads_classes_in_sorted_order(tmp_path):
    images = load_image_folder(write_image_folder(tmp_path, classes=3, per_class=2))
    assert images.classes == ["class_0", "class_1", "class_2"]
    assert images.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert images.image(0).mode == "RGB"


def test_image_folder_rejects_corrupt_image(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "class_0" / "broken.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DeployError, match=r"cannot read image .*broken.jpg"):
        load_image_folder(tmp_path)


def test_image_folder_rejects_class_without_images(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "class_9").mkdir()
    with pytest.raises(DeployError, match="class_9 has no images"):
        load_image_folder(tmp_path)


def _mixed_folder(root):
    """A real-world folder: a 640x480 JPEG, small squares and a 1x4000 sliver."""
    rng = np.random.default_rng(1)
    sizes = {"cats": [(640, 480), (32, 32), (1, 4000)], "dogs": [(32, 32), (300, 200), (48, 96)]}
    for name, shapes in sizes.items():
        (root / name).mkdir(parents=True)
        for i, (w, h) in enumerate(shapes):
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / name / f"{i}.jpg")
    return root


def test_normalisation_is_fitted_on_images_of_mixed_sizes(tmp_path):
    from alexnet_deploy.data.preprocessing import fit_normalisation

    images = load_image_folder(_mixed_folder(tmp_path))
    pre = Preprocessing()
    fitted = fit_normalisation(images, pre)
    # reference: every resized pixel in one array, numpy's own mean/std
    pixels = np.concatenate([pre.resized(images.image(i)).reshape(-1, 3) for i in range(len(images))]) / 255.0
    np.testing.assert_allclose(fitted.mean, pixels.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(fitted.std, pixels.std(axis=0), atol=1e-6)


def test_a_sliver_is_cropped_to_the_maximum_aspect_before_resizing():
    pre = Preprocessing()
    sliver = Image.new("RGB", (1, 4000), (10, 20, 30))
    assert pre.resized(sliver).shape == (1024, 256, 3)  # 1x4 kept, then shorter side 256
    assert pre(sliver).shape == (3, 227, 227)
    assert pre.resized(Image.new("RGB", (640, 480))).shape == (256, 341, 3)  # ordinary images untouched


def test_only_regular_files_are_images(tmp_path):
    import os
    import socket

    from alexnet_deploy.quantize.images import calibration_files

    write_image_folder(tmp_path)
    folder = tmp_path / "class_0"
    os.mkfifo(folder / "pipe.png")  # opening it would block forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "sock.jpg"))
    (folder / "dir.png").mkdir()
    (folder / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "link.png").symlink_to(folder / "img1.png")  # a link to a regular file counts
    try:
        images = load_image_folder(tmp_path)
        files = calibration_files(tmp_path)
    finally:
        sock.close()
    assert np.bincount(images.labels).tolist() == [4, 3]
    assert sorted(p.name for p in files if p.parent == folder) == ["img0.jpg", "img1.png", "img2.jpg", "link.png"]


def test_a_truncated_jpeg_in_a_worker_is_one_clean_error(tmp_path):
    from alexnet_deploy.data.loading import EvalDataset, batch_loader

    write_image_folder(tmp_path, size=64)
    broken = tmp_path / "class_1" / "img0.jpg"
    broken.write_bytes(broken.read_bytes()[:1000])  # header intact, scan data cut
    images = load_image_folder(tmp_path)  # headers pass
    loader = batch_loader(EvalDataset(images, Preprocessing()), 2, num_workers=2)
    with pytest.raises(DeployError) as caught:
        list(loader)
    message = str(caught.value)
    assert message.startswith(f"cannot read image {broken}") and "\n" not in message and "Traceback" not in message


def test_the_split_is_made_among_the_limited_images_only():
    labels = load_digits().labels
    split = Split(limit=200)
    parts = split.indices(labels)
    pool = np.sort(np.random.default_rng(0).permutation(len(labels))[:200])
    np.testing.assert_array_equal(np.sort(np.concatenate(list(parts.values()))), pool)
    assert Split(**split.to_dict()) == split


@pytest.mark.parametrize(
    "make",
    [
        lambda: Split(val_fraction=2),
        lambda: Split(val_fraction=0.6, calibration_fraction=0.5),
        lambda: Split(seed=-1),
        lambda: Split(limit=0),
        lambda: Preprocessing(resize=0, crop=0),
        lambda: Preprocessing(crop=1000),
        lambda: Preprocessing(std=(0.2, 0.0, 0.2)),
        lambda: Preprocessing(mean=(float("nan"), 0.5, 0.5)),
        lambda: Preprocessing(resize=100_000, crop=227),
    ],
    ids=[
        "val-2",
        "sum-over-1",
        "seed-negative",
        "limit-0",
        "resize-0",
        "crop-above-resize",
        "std-0",
        "mean-nan",
        "resize-huge",
    ],
)
def test_split_and_preprocessing_refuse_out_of_range_values(make):
    with pytest.raises(DeployError):
        make()


def epoch_batches(loader, dataset, epochs=(1, 2)) -> list[np.ndarray]:
    batches = []
    for epoch in epochs:
        dataset.epoch = epoch
        batches += [images.numpy().copy() for images, _ in loader]
    return batches


def test_persistent_workers_see_each_new_epoch_of_augmentation():
    images = load_digits().subset(range(12))
    dataset = TrainingDataset(images, Preprocessing(resize=40, crop=32), Augmentation(), seed=3)
    in_process = epoch_batches(batch_loader(dataset, 4), dataset)
    with_workers = batch_loader(dataset, 4, **loader_options(2, torch.device("cpu")))
    assert with_workers.persistent_workers and with_workers.prefetch_factor == 2 and not with_workers.pin_memory
    for ours, theirs in zip(epoch_batches(with_workers, dataset), in_process, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert not np.array_equal(in_process[0], in_process[3])  # epoch 2 differs from epoch 1


def test_default_workers_only_where_images_are_decoded_from_files(tmp_path):
    assert default_workers(load_digits()) == 0
    folder = load_image_folder(write_image_folder(tmp_path))
    cores = len(os.sched_getaffinity(0))
    assert default_workers(folder) == max(1, min(4, cores))
    assert default_workers(folder, processes_per_node=64) == 1
    assert loader_options(0, torch.device("cpu")) == {"num_workers": 0, "pin_memory": False}
    assert loader_options(1, torch.device("cuda"))["pin_memory"]
