"""The lengths a model's free dims are served at: ``--rknn-dims NAME=V1|V2`` as a matrix axis.

``--rknn-dims seq=16|32`` (repeatable; ini ``rknn_dims``; the ``|`` of ``--rknn-config``) names
values for free dims. A model with any of the named free dims becomes one cell whose conversion
lists every combination of the values in ``config(dynamic_input=...)``, one :class:`ShapeSet`
each (a free dim not named is 1, as without the option). The cell is simulated at each listed
shape and at one shape not listed (:func:`unlisted`), to show what the runtime does with it.

The dims are part of the subject's id (:func:`label`, e.g. ``dyn-seq16_32``: safe in ``-k``
expressions), so of the cell id and of every cache key made from it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pytest_rknn.pipeline.input_roles import DeclaredInput

Dims = tuple[tuple[str, tuple[int, ...]], ...]
"""Named free dims and their values, sorted by name; values ascending."""

MAX_SHAPE_SETS = 32
"""More combinations than this in one cell is a usage error: each is a compiled graph."""


class DimsError(ValueError):
    """A ``--rknn-dims`` entry that cannot be used; the message names the fix."""


def parse_dims(entries: Iterable[str]) -> Dims:
    """``NAME=V1|V2`` entries as :data:`Dims` (``()`` for none)."""
    found: dict[str, tuple[int, ...]] = {}
    for entry in entries:
        name, sep, raw = str(entry).partition("=")
        name = name.strip()
        if not sep or not name or not raw.strip():
            raise DimsError(
                f"--rknn-dims {entry!r}: write NAME=V1|V2, the model's free dim and the "
                "lengths to serve (e.g. seq=64|128)"
            )
        if not name.isidentifier():
            raise DimsError(
                f"--rknn-dims {entry!r}: {name!r} is not a dim name (letters, digits and _, "
                "as the ONNX graph names its free dim)"
            )
        if name in found:
            raise DimsError(f"--rknn-dims {name} given twice: write {name}=V1|V2 once")
        values = []
        for text in raw.split("|"):
            text = text.strip()
            if not text.isdigit() or int(text) < 1:
                raise DimsError(
                    f"--rknn-dims {name}={raw}: {text!r} is not a length; give whole numbers "
                    f">= 1, e.g. {name}=64|128"
                )
            values.append(int(text))
        found[name] = tuple(sorted(set(values)))
    dims = tuple(sorted(found.items()))
    count = 1
    for _name, values in dims:
        count *= len(values)
    if count > MAX_SHAPE_SETS:
        raise DimsError(
            f"--rknn-dims: {count} combinations of lengths, over {MAX_SHAPE_SETS} (one compiled "
            "graph each): give fewer values"
        )
    return dims


def label(dims: Dims) -> str:
    """The dims in a subject id: ``dyn-seq16_32`` (``dyn-batch1_2-seq16``), ``-k``-safe."""
    return "dyn-" + "-".join(f"{name}{'_'.join(map(str, values))}" for name, values in dims)


def free_dims(declared: Sequence[DeclaredInput]) -> list[str]:
    """The names of the free dims the inputs declare, in order (unnamed ones left out)."""
    names = [d for value in declared for d in value.dims if isinstance(d, str) and d]
    return list(dict.fromkeys(names))


def applying(dims: Dims, declared: Sequence[DeclaredInput]) -> Dims:
    """The part of ``dims`` that names free dims of these inputs."""
    names = set(free_dims(declared))
    return tuple((name, values) for name, values in dims if name in names)


@dataclass(frozen=True)
class ShapeSet:
    """One listed combination: the dims' values and each input's shape at them."""

    dims: tuple[tuple[str, int], ...]
    shapes: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def dims_dict(self) -> dict[str, int]:
        return dict(self.dims)

    @property
    def shapes_dict(self) -> dict[str, tuple[int, ...]]:
        return dict(self.shapes)

    @property
    def size(self) -> int:
        """How many elements the inputs hold: the largest set is the toolkit's MaxShape."""
        total = 0
        for _name, shape in self.shapes:
            n = 1
            for d in shape:
                n *= d
            total += n
        return total

    def describe(self) -> str:
        """``seq 16`` (``batch 2, seq 16``)."""
        return ", ".join(f"{name} {value}" for name, value in self.dims)


def _shape_at(value: DeclaredInput, at: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(
        d if isinstance(d, int) else at.get(d, 1) if isinstance(d, str) else 1 for d in value.dims
    )


def shape_sets(dims: Dims, declared: Sequence[DeclaredInput]) -> list[ShapeSet]:
    """Every combination of the values, in order; a free dim not named is 1."""
    names = [name for name, _values in dims]
    found = []
    for combo in itertools.product(*(values for _name, values in dims)):
        at = dict(zip(names, combo, strict=True))
        shapes = tuple((v.name, _shape_at(v, at)) for v in declared)
        found.append(ShapeSet(tuple(at.items()), shapes))
    return found


def unlisted(dims: Dims, declared: Sequence[DeclaredInput]) -> ShapeSet:
    """A shape the cell does not list: its first dim at a length between two listed ones
    (past the largest when one is listed), the others at their smallest."""
    (first, values), *rest = dims
    length = values[0] + (values[1] - values[0]) // 2 if len(values) > 1 else values[0] * 2
    if length in values:
        length = values[-1] + 1
    at = {first: length, **{name: vals[0] for name, vals in rest}}
    shapes = tuple((v.name, _shape_at(v, at)) for v in declared)
    return ShapeSet(tuple(at.items()), shapes)


def largest(sets: Sequence[ShapeSet]) -> ShapeSet:
    """The set with the most input elements (the MaxShape a quantized build calibrates at)."""
    return max(sets, key=lambda s: s.size)


def serves(dims: Dims) -> str:
    """``seq 16, 32`` (``batch 1, 2; seq 16``): what a passing cell serves."""
    return "; ".join(f"{name} {', '.join(map(str, values))}" for name, values in dims)
