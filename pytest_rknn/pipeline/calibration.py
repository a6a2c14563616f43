"""Calibration sets of quantized cells: the user's samples, or N drawn like the inputs.

A quantized build (``int8``, ``int8-mmse``, ``int8-kl``, ``hybrid``) calibrates its activation
ranges on a dataset. A subject that carries the user's own samples (:mod:`.calibration_files`)
calibrates on exactly those (``source`` user). Otherwise (``source`` generated): calibrating on
the very input that is then judged flatters int8 (the ranges fit that input exactly), so
:func:`make_calibration` draws ``n`` samples from the same distribution as the subject's inputs
with seeds of their own (derived from the run's seed and the sample's index, never equal to
it), like real traffic: masks padded by none, a quarter or a half of their positions across the
samples, even at batch 1, token ids across the vocabulary, position ids a range, float inputs
unit normal (each subject's ``sample``); it drops any sample identical to the test input or to
an earlier sample, and writes each as ``.npy`` files on the host. :func:`write_dataset` puts
them into a job's own folder with the toolkit's ``dataset.txt``: one line per sample, the
model's inputs space-separated, paths relative to the dataset file's folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pytest_rknn.pipeline.calibration_files import CalibrationData
from pytest_rknn.pipeline.subjects import Subject
from pytest_rknn.verdict.positions import masks_of

DEFAULT_SAMPLES = 8
DATASET = "dataset.txt"


class CalibrationError(RuntimeError):
    """No calibration set different from the test input can be drawn; the message says why."""


@dataclass(frozen=True)
class CalibrationSet:
    """``samples[i][j]``: the file of input ``names[j]`` in sample ``i``; ``digests`` likewise."""

    names: tuple[str, ...]
    samples: tuple[tuple[Path, ...], ...]
    digests: tuple[tuple[str, ...], ...]
    seeds: tuple[int, ...]
    source: str = "generated"
    file: str | None = None
    masked: int = 0
    masked_union: tuple[tuple[str, np.ndarray], ...] = field(default=(), compare=False)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def digest(self) -> str:
        """One hash of every sample's arrays."""
        text = "|".join(",".join(row) for row in self.digests)
        return hashlib.sha256(text.encode()).hexdigest()

    def key(self) -> list[list[str]]:
        """What the conversion depends on: every sample's arrays, by content."""
        return [list(d) for d in self.digests]


def sample_seed(seed: int, index: int) -> int:
    """The seed of calibration sample ``index`` of a run with ``seed`` (never ``seed`` itself)."""
    digest = hashlib.sha256(f"pytest-rknn calibration|{seed}|{index}".encode()).digest()
    value = int.from_bytes(digest[:7], "little")
    return value if value != seed else value + 1


def _digest(array: np.ndarray) -> str:
    data = np.ascontiguousarray(array)
    return hashlib.sha256(f"{data.dtype.str}{data.shape}".encode() + data.tobytes()).hexdigest()


def make_calibration(
    subject: Subject,
    seed: int,
    n: int,
    names: list[str],
    test_inputs: dict[str, np.ndarray],
    folder: Path,
) -> CalibrationSet:
    """Draw ``n`` samples of ``subject``'s inputs ``names`` and write them under ``folder``
    (the user's samples instead, all of them, when the subject carries them)."""
    data = getattr(subject, "calibration_data", None)
    if data is not None:
        return _user_samples(subject, data, names, folder)
    if n < 1:
        raise ValueError(f"a calibration set needs at least one sample, not {n}")
    folder.mkdir(parents=True, exist_ok=True)
    test = tuple(_digest(test_inputs[name]) for name in names)
    seen = {test}
    samples: list[tuple[Path, ...]] = []
    digests: list[tuple[str, ...]] = []
    seeds: list[int] = []
    drawn: list[dict[str, np.ndarray]] = []
    index = 0
    while len(samples) < n and index < 4 * n:
        seed_i = sample_seed(seed, index)
        index += 1
        arrays = subject.sample(seed_i, len(samples))
        missing = [name for name in names if name not in arrays]
        if missing:
            raise CalibrationError(f"a calibration sample lacks the input(s) {missing}")
        row = tuple(_digest(arrays[name]) for name in names)
        if row in seen:
            continue
        seen.add(row)
        samples.append(_write(folder, len(samples), names, arrays))
        drawn.append(arrays)
        digests.append(row)
        seeds.append(seed_i)
    if len(samples) < n:
        raise CalibrationError(
            f"cannot draw {n} calibration samples of {subject.id} that differ from its test "
            f"input and from each other (got {len(samples)} in {index} draws): its inputs take "
            "too few values; use a smaller --rknn-calibration"
        )
    found = CalibrationSet(tuple(names), tuple(samples), tuple(digests), tuple(seeds))
    return _with_masks(found, subject, drawn)


def _write(folder: Path, index: int, names: list[str], arrays: dict[str, np.ndarray]) -> tuple:
    paths = []
    for j, name in enumerate(names):
        path = folder / f"sample{index}-{j}.npy"
        np.save(path, np.ascontiguousarray(arrays[name]), allow_pickle=False)
        paths.append(path)
    return tuple(paths)


def _user_samples(
    subject: Subject, data: CalibrationData, names: list[str], folder: Path
) -> CalibrationSet:
    """The user's samples of ``names``, written under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    samples, digests = [], []
    for i in range(len(data)):
        arrays = data.sample(i)
        samples.append(_write(folder, i, names, arrays))
        digests.append(tuple(_digest(arrays[name]) for name in names))
    found = CalibrationSet(
        tuple(names), tuple(samples), tuple(digests), (), source="user", file=data.name
    )
    return _with_masks(found, subject, [data.sample(i) for i in range(len(data))])


def _with_masks(
    found: CalibrationSet, subject: Subject, samples: list[dict[str, np.ndarray]]
) -> CalibrationSet:
    """``found`` with how many samples mask any position, and every position (per mask input)
    that some sample masks."""
    masked = 0
    union: dict[str, np.ndarray] = {}
    for arrays in samples:
        masks = masks_of(subject, arrays)
        masked += any(m.padded for m in masks)
        for m in masks:
            before = union.get(m.name)
            if before is None:
                union[m.name] = ~m.keep
            elif before.shape == m.keep.shape:
                union[m.name] = before | ~m.keep
    return replace(found, masked=masked, masked_union=tuple(union.items()))


def never_masked(calibration: CalibrationSet, subject: Subject, inputs: dict) -> list[str]:
    """The mask inputs whose test values mask a position that no calibration sample masked
    (a quantized mask path calibrated that way may clip the padding away)."""
    union = dict(calibration.masked_union)
    found = []
    for m in masks_of(subject, inputs):
        masked = ~m.keep
        if not masked.any():
            continue
        seen = union.get(m.name)
        unseen = seen is None or not seen.any()
        if unseen or (seen.shape == masked.shape and (masked & ~seen).any()):
            found.append(m.name)
    return found


def record_of(
    calibration: CalibrationSet, subject: Subject, inputs: dict[str, np.ndarray]
) -> dict[str, object]:
    """The cell's ``calibration`` field: what the build calibrated on."""
    trap = never_masked(calibration, subject, inputs)
    note = None
    if trap:
        note = (
            f"the test input masks positions of {', '.join(trap)} that no calibration sample masked"
        )
    return {
        "source": calibration.source,
        "file": calibration.file,
        "samples": len(calibration),
        "masked_samples": calibration.masked,
        "digest": calibration.digest,
        "note": note,
    }


def write_dataset(calibration: CalibrationSet, outdir: Path) -> Path:
    """Put the samples into a job's folder (hard links where possible) and write its dataset
    list; returns the list's path."""
    outdir = Path(outdir)
    lines = []
    for i, paths in enumerate(calibration.samples):
        row = []
        for j, source in enumerate(paths):
            target = outdir / f"calib{i}-{j}.npy"
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
            row.append(target.name)
        lines.append(" ".join(row))
    dataset = outdir / DATASET
    dataset.write_text("\n".join(lines) + "\n")
    return dataset
