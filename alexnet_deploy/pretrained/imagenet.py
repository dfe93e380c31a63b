"""The 1,000 ILSVRC-2012 classes, as shipped in ``imagenet_synset_words.txt``.

Where the list comes from: the ILSVRC-2012 development kit's class list, one WordNet
synset per line, ``<synset id> <comma-separated WordNet lemmas>``, in the sorted
synset-id order every ImageNet-1k model's output index follows — BVLC Caffe's
``data/ilsvrc12/synset_words.txt`` and the ONNX model zoo's ``synset.txt`` are this
file. The lemmas are WordNet 3.0's (Princeton University, WordNet 3.0 licence: use,
copy and distribution permitted with its copyright notice; see docs/pretrained.md).

A class's *name* here is its first lemma ("tench" for ``n01440764 tench, Tinca
tinca``). Two pairs of ILSVRC classes share a first lemma (crane the bird and crane
the machine; two maillots), so those four names carry their synset id too:
"crane (n02012849)". Names must be unique because a labelled folder may name its
class sub-folders by them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from ..errors import DeployError
from ..files import require_file

CLASS_COUNT = 1000
SYNSET_WORDS = "imagenet_synset_words.txt"


@dataclass(frozen=True)
class ImageNetClass:
    synset: str  # WordNet id, e.g. "n01440764"
    lemmas: str  # all of WordNet's words for it, e.g. "tench, Tinca tinca"
    name: str  # the unique short name this project labels it with


@cache
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """The 1,000 classes in output-index order."""
    text = resources.files(__package__).joinpath(SYNSET_WORDS).read_text(encoding="utf-8")
    rows = [line.split(" ", 1) for line in text.splitlines() if line.strip()]
    firsts = Counter(lemmas.split(",")[0] for _, lemmas in rows)
    classes = tuple(
        ImageNetClass(synset, lemmas, first if firsts[first] == 1 else f"{first} ({synset})")
        for synset, lemmas in rows
        for first in [lemmas.split(",")[0]]
    )
    if len(classes) != CLASS_COUNT or len({c.name for c in classes}) != CLASS_COUNT:
        raise RuntimeError(f"{SYNSET_WORDS} is damaged: expected {CLASS_COUNT} distinct classes")
    return classes


def imagenet_names() -> list[str]:
    return [c.name for c in imagenet_classes()]


def imagenet_synsets() -> list[str]:
    return [c.synset for c in imagenet_classes()]


@dataclass(frozen=True)
class Labels:
    names: list[str]
    ids: list[str]
    source: str


_SYNSET_LINE = re.compile(r"^(n\d{8})\s+(.+)$")


def read_labels(path: Path | None, num_classes: int) -> Labels:
    """Class names for ``num_classes`` outputs: the shipped ImageNet list for 1000, or
    ``path`` (one class per line, either a plain name or Caffe's ``synset_words.txt``
    form ``n01440764 tench, Tinca tinca``, whose first word after the id is the name)."""
    if path is None:
        if num_classes != CLASS_COUNT:
            raise DeployError(
                f"the model has {num_classes} classes, not ImageNet's {CLASS_COUNT}: give their names with --labels FILE"
            )
        return Labels(imagenet_names(), imagenet_synsets(), "ILSVRC-2012 (shipped)")
    require_file(path, "labels file", "one class name per line")
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")  # not read_text: it turns a lone CR into a line break
    except (OSError, UnicodeDecodeError) as error:
        raise DeployError(f"cannot read labels file {path}: {error}") from None
    # one class per "\n" line (a "\r\n" ending too): splitlines() would also split at a
    # CR, a form feed... inside a name and count lines the file does not have
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    for number, line in enumerate(text.split("\n"), 1):
        if any(not character.isprintable() and character != "\t" for character in line.rstrip("\r")):
            raise DeployError(f"labels file {path} line {number}: a class name may not hold control characters")
    if len(lines) != num_classes:
        raise DeployError(f"labels file {path} names {len(lines)} classes but the model outputs {num_classes}")
    synsets = [_SYNSET_LINE.match(line) for line in lines]
    if all(synsets):
        ids = [m.group(1) for m in synsets if m]
        names = [m.group(2).split(",")[0].strip() for m in synsets if m]
        names = [f"{n} ({i})" if names.count(n) > 1 else n for n, i in zip(names, ids, strict=True)]
    else:
        ids, names = [], lines
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise DeployError(f"labels file {path} names class {duplicate!r} more than once")
    return Labels(names, ids, str(path))
