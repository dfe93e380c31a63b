"""Data sources, the held-out split and the one preprocessing definition."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_deploy.data import (
    Augmentation,
    Preprocessing,
    Split,
    TrainingDataset,
    batch_loader,
    default_workers,
    load_digits,
    load_image_folder,
    loader_options,
)
from alexnet_deploy.errors import DeployError
from conftest import write_image_folder


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


def test_split_does_not_depend_on_the_training_seed():
    labels = load_digits().labels
    np.testing.assert_array_equal(Split(seed=0).indices(labels)["val"], Split(seed=0).indices(labels)["val"])
    assert not np.array_equal(Split(seed=0).indices(labels)["val"], Split(seed=1).indices(labels)["val"])


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
    with pytest.raises(DeployError, match="cannot read image .*broken.jpg"):
        load_image_folder(tmp_path)


def test_image_folder_rejects_class_without_images(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "class_9").mkdir()
    with pytest.raises(DeployError, match="class_9 has no images"):
        load_image_folder(tmp_path)


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
