"""pytest-rknn's pytest plugin: options, markers, fixtures and hooks (the host side).

Cells are ordinary pytest items: a test that asks for the ``rknn_cell`` fixture is parametrized
over every (variant, platform, toolkit, quant) of the run, so ``-k``, ``--lf``, ``-x``, xdist,
JUnit XML and IDEs work on them. Each finished cell travels to the controlling process on its
report (``user_properties``), where the :class:`~pytest_rknn.recorder.Recorder` keeps the matrix.
The public ``rknn`` fixture converts any ONNX model of a user's own test.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_rknn.cells import FAILING, CellSpec, Outcome, run_cell
from pytest_rknn.exploring import Explorer, ExploreTarget, explore_targets
from pytest_rknn.recorder import Recorder, baseline_failures
from pytest_rknn.session import RknnSession
from pytest_rknn.settings import Settings, add_options
from pytest_rknn.suite import build_cells
from pytest_rknn.tolerance import Bounds

SETTINGS = pytest.StashKey[Settings]()
SESSION = pytest.StashKey[RknnSession]()
RECORDER = pytest.StashKey[Recorder]()
CELLS = pytest.StashKey[list[CellSpec]]()
RECORDS = pytest.StashKey[list[dict[str, Any]]]()
PROPERTY = "rknn_cell"


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "rknn(max_abs=..., min_cosine=..., ...): tolerance bounds for this test's rknn cells",
    )
    config.addinivalue_line("markers", "rknn_cell: a cell of the rknn compatibility matrix")
    settings = Settings.from_config(config)
    config.stash[SETTINGS] = settings
    if not _is_xdist_worker(config):
        recorder = Recorder(config, settings, PROPERTY)
        config.stash[RECORDER] = recorder
        config.pluginmanager.register(recorder, "rknn-recorder")


def provision(config: pytest.Config) -> None:
    """Create or verify the run's toolkit environments, with progress, before tests start.

    Called from a suite's conftest (see ``cases/conftest.py``) in its ``pytest_sessionstart``:
    only the controlling process builds; xdist workers find the environments ready.
    """
    if _is_xdist_worker(config):
        return
    from pytest_rknn.envs import get_envs

    settings = config.stash[SETTINGS]
    capman = config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        wants_exporter = not settings.forms or "torch-export" in settings.forms
        envs = get_envs(
            list(settings.toolkits), root=settings.envs_root, create=True, exporter=wants_exporter
        )
    recorder = config.stash.get(RECORDER, None)
    if recorder is not None:
        recorder.describe_envs(envs)


def _session(config: pytest.Config) -> RknnSession:
    if SESSION not in config.stash:
        factory: pytest.TempPathFactory = config._tmp_path_factory  # type: ignore[attr-defined]
        workdir = factory.mktemp("rknn", numbered=True)
        session = RknnSession(config.stash[SETTINGS], workdir, getattr(config, "cache", None))
        session.export_specs = [
            c.subject.spec
            for c in config.stash.get(CELLS, [])
            if getattr(c.subject, "spec", None) is not None
            and c.subject.spec.form == "torch-export"
        ]
        config.stash[SESSION] = session
    return config.stash[SESSION]


def _cells(config: pytest.Config) -> list[CellSpec]:
    if CELLS not in config.stash:
        config.stash[CELLS] = build_cells(config.stash[SETTINGS])
    return config.stash[CELLS]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "rknn_explore" in metafunc.fixturenames:
        targets = explore_targets(metafunc.config.stash[SETTINGS])
        metafunc.parametrize("rknn_explore", targets, ids=[t.id for t in targets], indirect=True)
    if "rknn_cell" in metafunc.fixturenames:
        cells = _cells(metafunc.config)
        metafunc.parametrize(
            "rknn_cell",
            cells,
            ids=[c.id for c in cells],
            indirect=True,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = config.stash[SETTINGS]
    _select_mode(config, items, settings.explore)
    failures = baseline_failures(settings.baseline) if settings.baseline else {}
    for item in items:
        callspec = getattr(item, "callspec", None)
        cell = callspec.params.get("rknn_cell") if callspec else None
        if not isinstance(cell, CellSpec):
            continue
        item.add_marker(pytest.mark.rknn_cell)
        known = failures.get(cell.key)
        if known:
            item.add_marker(
                pytest.mark.xfail(strict=True, reason=f"failed in the baseline: {known}")
            )


def _select_mode(config: pytest.Config, items: list[pytest.Item], explore: bool) -> None:
    """``--rknn-explore`` runs the explore items only; otherwise they are deselected."""
    unwanted = "rknn_cell" if explore else "rknn_explore"
    dropped = [i for i in items if unwanted in getattr(i, "fixturenames", ())]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if unwanted not in getattr(i, "fixturenames", ())]


def _bounds(node: pytest.Item, settings: Settings, quant: str) -> Bounds:
    family = "int8" if quant.startswith("int8") else "fp16"
    try:
        bounds = Bounds.for_mode(quant)
        if settings.bounds.get(family):
            bounds = Bounds.from_ini(settings.bounds[family], base=bounds)
        marker = node.get_closest_marker("rknn")
        if marker is not None and marker.kwargs:
            bounds = bounds.replace(**marker.kwargs)
    except ValueError as exc:
        raise pytest.UsageError(f"rknn tolerance bounds: {exc}") from None
    return bounds


class CellRunner:
    """What the ``rknn_cell`` fixture gives a test: run its cell and turn it into a verdict."""

    def __init__(self, cell: CellSpec, node: pytest.Item, session: RknnSession) -> None:
        self.cell = cell
        self.node = node
        self.session = session
        self.outcome: Outcome | None = None

    def run(self) -> Outcome:
        if self.outcome is None:
            bounds = _bounds(self.node, self.session.settings, self.cell.quant)
            self.outcome = run_cell(self.cell, self.session, bounds)
            self.node.stash.setdefault(RECORDS, []).append(self.outcome.record)
        return self.outcome

    def check(self) -> Outcome:
        """Run the cell; skip if it cannot apply, fail unless it passed."""
        outcome = self.run()
        return verdict(outcome)


def verdict(outcome: Outcome) -> Outcome:
    status = outcome.status
    if status == "unsupported":
        pytest.skip(f"unsupported: {outcome.record['reason']}")
    if status in FAILING or status == "env-error":
        pytest.fail(outcome.message, pytrace=False)
    return outcome


@pytest.fixture
def rknn_cell(request: pytest.FixtureRequest) -> CellRunner:
    """The matrix cell this test item stands for (parametrized by the plugin)."""
    cell = getattr(request, "param", None)
    if not isinstance(cell, CellSpec):
        raise pytest.UsageError(
            "rknn_cell is parametrized by pytest-rknn; do not request it directly"
        )
    return CellRunner(cell, request.node, _session(request.config))


@pytest.fixture
def rknn_explore(request: pytest.FixtureRequest) -> Explorer:
    """The (platform, toolkit, quant) target this explore item searches (``--rknn-explore``)."""
    target = getattr(request, "param", None)
    if not isinstance(target, ExploreTarget):
        raise pytest.UsageError("rknn_explore is parametrized by pytest-rknn; do not request it")
    session = _session(request.config)
    bounds = _bounds(request.node, session.settings, target.quant)
    return Explorer(target, session, bounds, request.node.stash.setdefault(RECORDS, []))


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
    ) -> Outcome:
        """Convert ``model`` (a path or ``onnx.ModelProto``) and judge it against onnxruntime.

        Returns the outcome (``.status``, ``.record`` with signature, metrics, log excerpt, and
        ``.outputs``); it does not fail the test by itself: call :func:`verdict` or assert.
        """
        from pytest_rknn.platforms import parse_platforms, parse_quant
        from pytest_rknn.subjects import provided_model

        (platform,) = parse_platforms(platform)
        (quant,) = parse_quant(quant)
        version = toolkit or self.session.settings.toolkit_names[0]
        folder = self.session.workdir / "provided"
        subject = provided_model(model, folder, inputs)
        cell = CellSpec(subject, platform, version, quant)
        outcome = run_cell(cell, self.session, _bounds(self.node, self.session.settings, quant))
        self.node.stash.setdefault(RECORDS, []).append(outcome.record)
        return outcome


@pytest.fixture
def rknn(request: pytest.FixtureRequest) -> Converter:
    """Convert ONNX models with rknn-toolkit2 in a test: ``rknn.convert(model, "rk3566")``."""
    return Converter(request.node, _session(request.config))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[Any]:
    report = yield
    records = item.stash.get(RECORDS, [])
    if records and (report.when == "call" or report.outcome != "passed"):
        for record in records:
            report.user_properties.append((PROPERTY, json.dumps(record, default=str)))
        records.clear()
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(SESSION, None)
    if state is not None:
        state.close()
