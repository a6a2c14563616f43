"""What a pytest item does with its cell: bounds, the run, the records, the verdict.

Owns :func:`item_judging` (the mode's bounds, the ini keys', the ``rknn`` marker's, and the
rule that made them), :func:`item_npu` (what the placement must be: ``--rknn-require-npu``,
the marker's ``npu``),
:func:`run_item` (the cell run under them, with ``--rknn-advise`` its known fixes too, and
its record kept in the item's stash for the report), :func:`verdict` (the pytest outcome a
status calls for, with the short failure block and the re-run command) and the objects the
fixtures give a test (:class:`CellRunner` for ``rknn_cell``, :class:`Converter` for
``rknn``). The fixtures and hooks themselves are :mod:`~pytest_rknn.plugin`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_rknn.pipeline.plan import CellSpec
from pytest_rknn.pipeline.targets import base_quant
from pytest_rknn.verdict.placement import REQUIREMENTS
from pytest_rknn.verdict.rules import Judging, emulation_rule
from pytest_rknn.verdict.tolerance import Bounds

if TYPE_CHECKING:  # the pipeline's run side is imported by the first cell that runs
    from pytest_rknn.pipeline.run import Outcome
    from pytest_rknn.pipeline.session import RknnSession
    from pytest_rknn.settings import Settings

RECORDS = pytest.StashKey[list[Any]]()
"""The records of an item's cells, for its report."""
SUMMARY = pytest.StashKey[str]()
"""A failing item's one-line summary."""


def item_judging(
    node: pytest.Item, settings: Settings, quant: str, all_positions: bool = False
) -> Judging:
    """The bounds of a cell of ``quant`` in ``node`` (the mode's, the ini keys', then the
    ``rknn`` marker's), the rule that made them, and whether every position is judged (the
    marker's or the caller's ``all_positions``)."""
    base = base_quant(quant)
    family = "int8" if base.startswith("int8") else base  # hybrid: no ini key, defaults
    rule = f"default {family}"
    emulate = settings.fp16_emulation if family == "fp16" else None
    if family == "fp16":
        rule = "fixed fp16 defaults" if emulate is None else emulation_rule(emulate)
    try:
        bounds = Bounds.for_mode(quant)
        if settings.bounds.get(family):
            bounds = Bounds.from_ini(settings.bounds[family], base=bounds)
            rule = f"ini rknn_bounds_{family}"
            emulate = None
    except ValueError as exc:
        raise pytest.UsageError(f"rknn tolerance bounds: {exc}") from None
    marker = node.get_closest_marker("rknn")
    overrides = dict(marker.kwargs) if marker is not None else {}
    overrides.pop("npu", None)
    every = overrides.pop("all_positions", False)
    if not isinstance(every, bool):
        pytest.fail(
            f"@pytest.mark.rknn on {node.name}: all_positions={every!r} must be True or False",
            pytrace=False,
        )
    if overrides:
        try:
            bounds = bounds.replace(**overrides)
        except ValueError as exc:
            pytest.fail(f"@pytest.mark.rknn on {node.name}: {exc}", pytrace=False)
        rule = "marker"
    every = all_positions or every
    if emulate is None:
        return Judging(bounds, rule, every)
    return Judging(bounds, rule, every, emulate=emulate, overrides=overrides)


def item_npu(node: pytest.Item, settings: Settings, given: str | None = None) -> str | None:
    """What the node asks of the placement: ``given`` (``rknn.convert(npu=...)``), else the
    ``rknn`` marker's ``npu``, else ``--rknn-require-npu`` (None: record it only)."""
    marker = node.get_closest_marker("rknn")
    if given is None and marker is not None and "npu" in marker.kwargs:
        given = marker.kwargs["npu"]
        where = f"@pytest.mark.rknn(npu=...) on {node.name}"
    else:
        where = "rknn.convert(npu=...)"
    if given is None:
        return settings.require_npu
    if given in (False, "none"):
        return None
    if given not in REQUIREMENTS:
        pytest.fail(
            f"{where}: {given!r} is not a requirement; use 'attention' (no attention op on the "
            "CPU), 'all' (no op on the CPU) or 'none'",
            pytrace=False,
        )
    return str(given)


def run_item(
    cell: CellSpec,
    node: pytest.Item,
    session: RknnSession,
    every: bool = False,
    npu: str | None = None,
) -> Outcome:
    """Run a cell under the node's bounds and placement requirement (with ``--rknn-advise``, a
    failing one's known fixes too) and keep its record for the node's report; ``every``: judge
    every output position."""
    from pytest_rknn.pipeline.run import held_to_npu, run_guarded

    settings = session.settings
    require = item_npu(node, settings, npu)
    judging = item_judging(node, settings, cell.quant, every)
    outcome = held_to_npu(run_guarded(cell, session, judging), require)
    if settings.advise:
        from pytest_rknn.pipeline.advise import ADVISED, advise
    if settings.advise and outcome.status in ADVISED:

        def attempt(fix: CellSpec) -> Any:
            judging = item_judging(node, settings, fix.quant, every)
            return held_to_npu(run_guarded(fix, session, judging), require).record

        outcome.record.fixes = advise(cell, outcome.record, attempt)
    node.stash.setdefault(RECORDS, []).append(outcome.record)
    return outcome


class CellRunner:
    """What the ``rknn_cell`` fixture gives a test: run its cell and turn it into a verdict."""

    def __init__(self, cell: CellSpec, node: pytest.Item, session: RknnSession) -> None:
        self.cell = cell
        self.node = node
        self.session = session
        self.outcome: Outcome | None = None

    def run(self) -> Outcome:
        if self.outcome is None:
            self.outcome = run_item(self.cell, self.node, self.session)
        return self.outcome

    def check(self) -> Outcome:
        """Run the cell; skip if it cannot apply, fail unless it passed."""
        return verdict(self.run(), self.node)


def verdict(outcome: Outcome, node: pytest.Item | None = None) -> Outcome:
    """Turn an outcome into the pytest outcome its status calls for.

    A failure shows a short block: status and signature, reason, the toolkit's first error and,
    given the test's ``node``, the command that runs this cell again; with ``-v`` or
    ``--tb=long``, also every metric against its bound and the toolkit's log.
    """
    outcome_name = outcome.status.outcome
    if outcome_name == "skipped":
        pytest.skip(f"{outcome.status.value}: {outcome.record.reason}")
    if outcome_name == "failed":
        text = outcome.message
        if node is not None:
            node.stash[SUMMARY] = text.splitlines()[0]
            text += f"\nre-run: {rerun_command(node, outcome.record)}"
            option = node.config.option
            if outcome.details and (option.verbose > 0 or option.tbstyle == "long"):
                text += "\n" + outcome.details
            elif outcome.details:
                text += "\n(metrics and the toolkit's log: -v)"
        pytest.fail(text, pytrace=False)
    return outcome


def rerun_command(node: pytest.Item, record: Any = None) -> str:
    """The command that runs just this item again (into a matrix of its own, so the run's
    matrix stays whole); a matrix cell's item is pinned to its ``record``'s one cell
    (:func:`pytest_rknn.views.text.rerun_command`)."""
    from pytest_rknn.views.text import rerun_command as command

    callspec = getattr(node, "callspec", None)
    is_cell = callspec is not None and isinstance(callspec.params.get("rknn_cell"), CellSpec)
    return command(
        item_target(node), node.config.invocation_params.args, record if is_cell else None
    )


def item_target(node: pytest.Item) -> str:
    """How a command line names this item: its node id, or, for an item of the installed
    package's suite (``pytest-rknn run``, ``pytest --pyargs``), its dotted name
    (``pytest_rknn.cases.test_matrix::test_cell[...]``), which works from any folder."""
    from pytest_rknn import cases

    path = Path(node.path)
    if path.parent == Path(cases.__file__).parent:
        return f"{cases.__name__}.{path.stem}::{node.name}"
    return node.nodeid


class Converter:
    """The ``rknn`` fixture: convert any ONNX model for any target inside a test."""

    def __init__(self, node: pytest.Item, session: RknnSession) -> None:
        self.node = node
        self.session = session

    def convert(
        self,
        model: Any,
        platform: str = "rk3588",
        toolkit: str | None = None,
        quant: str = "fp16",
        inputs: dict[str, Any] | None = None,
        npu: str | None = None,
        calibration: list[dict[str, Any]] | None = None,
        all_positions: bool = False,
        dims: dict[str, list[int]] | None = None,
    ) -> Outcome:
        """Convert ``model`` (a path or ``onnx.ModelProto``) and judge it against onnxruntime;
        ``npu`` (``attention``, ``all`` or ``none``) overrides the placement requirement.

        ``calibration``: the samples a quantized build calibrates on (a list of dicts of the
        model's inputs), instead of generated ones. ``all_positions``: judge the output
        positions an attention mask leaves out too.

        ``platform`` defaults to rk3588; ``toolkit`` to the newest version of the run's
        ``--rknn-toolkits`` (2.5.0 by default).

        Returns the outcome (``.status``, ``.record`` with signature, metrics, log excerpt, and
        ``.outputs``); it does not fail the test by itself: call :func:`verdict` or assert.
        ``dims`` (``{"seq": [64, 128]}``) serves the model's free dims at those lengths, as
        ``--rknn-dims`` does.
        """
        from pytest_rknn.pipeline.targets import PlatformError, parse_platforms, parse_quant
        from pytest_rknn.pipeline.user_models import provided_model

        try:
            (platform,) = parse_platforms(platform)
            (quant,) = parse_quant(quant)
        except (PlatformError, ValueError) as exc:
            raise ValueError(f"rknn.convert: {exc}") from None
        version = toolkit or self.session.settings.newest_toolkit
        folder = self.session.workdir / "provided"
        subject = provided_model(model, folder, inputs, calibration, dims)
        cell = CellSpec(subject, platform, version, quant)
        return run_item(cell, self.node, self.session, all_positions, npu)
