"""pytest-rknn's pytest plugin: options, markers, hooks and fixtures (the host side).

Cells are ordinary pytest items: a test that asks for the ``rknn_cell`` fixture is parametrized
over every (variant, platform, toolkit, quant) of the run, so ``-k``, ``--lf``, ``-x``, xdist,
JUnit XML and IDEs work on them. The controlling process provisions the toolkit environments the
collected cells need before any of them runs (like junitxml, only the controller does this), and
keeps the matrix (:class:`~pytest_rknn.recorder.Recorder`); each finished cell's record travels
to it on its report (``user_properties``). The public ``rknn`` fixture converts any ONNX model in
any project's tests. What an item does with its cell (bounds, run, verdict) is
:mod:`~pytest_rknn.pipeline.item`'s.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_rknn import xdist_support
from pytest_rknn.options import add_options
from pytest_rknn.pipeline.explore_targets import ExploreTarget, explore_targets
from pytest_rknn.pipeline.item import (
    RECORDS,
    SUMMARY,
    CellRunner,
    Converter,
    item_judging,
    item_target,
)
from pytest_rknn.pipeline.item import verdict as verdict  # the rknn fixture's users call it
from pytest_rknn.pipeline.plan import EXPORTER_FORMS, CellSpec, build_cells
from pytest_rknn.pipeline.shard import ShardError
from pytest_rknn.recorder import Recorder, baseline_failures
from pytest_rknn.settings import Settings

if TYPE_CHECKING:  # the pipeline's run side is imported by the first cell that runs
    from pytest_rknn.pipeline.explore import Explorer
    from pytest_rknn.pipeline.session import RknnSession

SETTINGS = pytest.StashKey[Settings]()
SESSION = pytest.StashKey["RknnSession"]()
TOOLKITS = pytest.StashKey[Any]()
RECORDER = pytest.StashKey[Recorder]()
CELLS = pytest.StashKey[list[CellSpec]]()
PROVISIONED = pytest.StashKey[bool]()
COLLECTED = pytest.StashKey[bool]()
PROPERTY = "rknn_cell"
TEST_PROPERTY = "rknn_test"
ASKED_CELLS = pytest.StashKey[bool]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_rknn import hooks

    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "rknn(max_abs=..., min_cosine=..., ..., all_positions=False, npu='attention'|'all'|"
        "'none'): tolerance bounds and the placement requirement for this test's rknn cells "
        "(all_positions=True: judge the positions an attention mask leaves out too)",
    )
    config.addinivalue_line("markers", "rknn_cell: a cell of the rknn compatibility matrix")
    settings = Settings.from_config(config)
    config.stash[SETTINGS] = settings
    if settings.shard is not None:
        _cells(config)  # an empty shard is a usage error now, not a collection error
    if not _is_xdist_worker(config) and not config.option.collectonly:
        recorder = Recorder(config, settings, PROPERTY)
        config.stash[RECORDER] = recorder
        config.pluginmanager.register(recorder, "rknn-recorder")
        for model in settings.models:
            stem = model.path.stem
            dim = (model.lengths_fed_as_one or ["seq"])[0]
            dim = dim if dim.isidentifier() else "seq"
            note = model.fed_as_one(
                f"--rknn-model {model.path.name}",
                f"no {stem}.npz beside it",
                f"give --rknn-dims {dim}=V1|V2 (or save {stem}.npz)",
            )
            if note is not None:
                recorder.note(note)
    if not config.pluginmanager.has_plugin("rknn-xdist"):
        config.pluginmanager.register(
            xdist_support.XdistHooks(lambda: _cells(config)), "rknn-xdist"
        )


@pytest.hookimpl(trylast=True)
def pytest_rknn_make_toolkits(config: pytest.Config, settings: Settings) -> Any:
    from pytest_rknn.envs.registry import Toolkits

    return Toolkits(settings.toolkits, settings.envs_root)


def _toolkits(config: pytest.Config) -> Any:
    if TOOLKITS not in config.stash:
        settings = config.stash[SETTINGS]
        config.stash[TOOLKITS] = config.hook.pytest_rknn_make_toolkits(
            config=config, settings=settings
        )
    return config.stash[TOOLKITS]


def _prepare(config: pytest.Config, versions: Iterable[str], exporter: bool) -> None:
    """Before the first cell (controller only, once per run): take the matrix path, then
    create or verify the environments of ``versions``."""
    versions = list(dict.fromkeys(versions))
    if config.stash.get(PROVISIONED, False) or not (versions or exporter):
        return
    config.stash[PROVISIONED] = True
    from pytest_rknn.envs.provisioning import EnvError
    from pytest_rknn.results.journal import MatrixInUse

    recorder = config.stash.get(RECORDER, None)
    if recorder is not None:
        try:
            recorder.claim()
        except MatrixInUse as exc:
            raise pytest.UsageError(str(exc)) from None

    toolkits = _toolkits(config)
    capman = config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        try:
            toolkits.provision(versions, exporter)
        except EnvError as exc:
            raise pytest.UsageError(str(exc)) from None
    if recorder is not None:
        recorder.describe_envs(toolkits.described)


def _needs(targets: Iterable[CellSpec | ExploreTarget], settings: Settings) -> tuple[list, bool]:
    versions, exporter = [], False
    for target in targets:
        versions.append(target.toolkit)
        if isinstance(target, CellSpec):
            exporter = exporter or target.needs_exporter
        else:
            exporter = exporter or any(f in EXPORTER_FORMS for f in settings.forms)
    return versions, exporter


@pytest.hookimpl(wrapper=True, tryfirst=True, specname="pytest_collection_modifyitems")
def pytest_rknn_note_collected(config: pytest.Config) -> Iterator[None]:
    """Note that collection got through (pytest calls collection_finish even when not)."""
    result = yield
    config.stash[COLLECTED] = True
    return result


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if _is_xdist_worker(config) or config.option.collectonly:
        return
    broken = session.testsfailed and not config.option.continue_on_collection_errors
    if not config.stash.get(COLLECTED, False) or broken:
        return
    config.stash[ASKED_CELLS] = _has_cells(session.items)
    targets = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec else {}
        for name in ("rknn_cell", "rknn_explore"):
            if isinstance(params.get(name), (CellSpec, ExploreTarget)):
                targets.append(params[name])
    _prepare(config, *_needs(targets, config.stash[SETTINGS]))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Under xdist the controller collects nothing: it reads the cells from the node ids."""
    config = node.config
    settings = config.stash[SETTINGS]
    known: dict[str, CellSpec | ExploreTarget] = {c.id: c for c in _cells(config)}
    known.update({t.id: t for t in explore_targets(settings)})
    params = [nodeid.partition("[")[2][:-1] for nodeid in ids]
    if any(p in known for p in params):
        config.stash[ASKED_CELLS] = True
    _prepare(config, *_needs([known[p] for p in params if p in known], settings))


def _session(config: pytest.Config, items: list[pytest.Item] | None = None) -> RknnSession:
    """This process's session; made on first use, and given the cells of ``items`` (the
    session's, in run order) so that it can get them ready ahead."""
    if SESSION not in config.stash:
        from pytest_rknn.pipeline.session import RknnSession

        factory: pytest.TempPathFactory = config._tmp_path_factory  # type: ignore[attr-defined]
        settings = config.stash[SETTINGS]
        session = RknnSession.create(
            settings,
            factory.mktemp("rknn", numbered=True),
            _toolkits(config),
            getattr(config, "cache", None),
            [c.subject.spec for c in config.stash.get(CELLS, []) if c.needs_exporter],
        )
        config.stash[SESSION] = session
        if items is not None:
            cells = [c for c in map(_cell_of, items) if c is not None]
            session.plan(cells, xdist_support.mine(config, cells))
    return config.stash[SESSION]


def _cell_of(item: pytest.Item) -> CellSpec | None:
    callspec = getattr(item, "callspec", None)
    cell = callspec.params.get("rknn_cell") if callspec else None
    return cell if isinstance(cell, CellSpec) else None


def _cells(config: pytest.Config) -> list[CellSpec]:
    if CELLS not in config.stash:
        try:
            config.stash[CELLS] = build_cells(config.stash[SETTINGS])
        except ShardError as exc:
            raise pytest.UsageError(str(exc)) from None
    return config.stash[CELLS]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "rknn_explore" in metafunc.fixturenames:
        targets = explore_targets(metafunc.config.stash[SETTINGS])
        metafunc.parametrize("rknn_explore", targets, ids=[t.id for t in targets], indirect=True)
    if "rknn_cell" in metafunc.fixturenames:
        cells = _cells(metafunc.config)
        metafunc.parametrize("rknn_cell", cells, ids=[c.id for c in cells], indirect=True)


@pytest.hookimpl(trylast=True)
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


@pytest.fixture
def rknn_cell(request: pytest.FixtureRequest) -> CellRunner:
    """The matrix cell this test item stands for (parametrized by the plugin)."""
    cell = getattr(request, "param", None)
    if not isinstance(cell, CellSpec):
        raise pytest.UsageError(
            "rknn_cell is parametrized by pytest-rknn; do not request it directly"
        )
    return CellRunner(cell, request.node, _session(request.config, request.session.items))


@pytest.fixture
def rknn_explore(request: pytest.FixtureRequest) -> Explorer:
    """The (platform, toolkit, quant) target this explore item searches (``--rknn-explore``)."""
    target = getattr(request, "param", None)
    if not isinstance(target, ExploreTarget):
        raise pytest.UsageError("rknn_explore is parametrized by pytest-rknn; do not request it")
    session = _session(request.config)
    judging = item_judging(request.node, session.settings, target.quant)
    from pytest_rknn.pipeline.explore import Explorer

    return Explorer(target, session, judging, request.node.stash.setdefault(RECORDS, []))


@pytest.fixture
def rknn(request: pytest.FixtureRequest) -> Converter:
    """Convert ONNX models with rknn-toolkit2 in a test: ``rknn.convert(model, "rk3566")``."""
    return Converter(request.node, _session(request.config))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[Any]:
    report = yield
    records = item.stash.get(RECORDS, [])
    if records and (report.when == "call" or report.outcome != "passed"):
        crash = getattr(report.longrepr, "reprcrash", None)
        if report.failed and crash is not None and SUMMARY in item.stash:
            # One line in the short test summary, also on CI (where pytest prints it whole).
            crash.message = item.stash[SUMMARY]
        if _cell_of(item) is not None:
            report.user_properties.append((TEST_PROPERTY, item_target(item)))
        for record in records:
            report.user_properties.append((PROPERTY, json.dumps(record.to_dict())))
        records.clear()
    return report


def _has_cells(items: Iterable[pytest.Item]) -> bool:
    names = ("rknn_cell", "rknn_explore")
    return any(n in getattr(i, "fixturenames", ()) for i in items for n in names)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Options that choose cells, but no test here holds them: say where the suite is."""
    if (
        _is_xdist_worker(config)
        or config.option.collectonly
        or config.stash.get(ASKED_CELLS, False)
    ):
        return
    option = config.option
    if option.rknn_model or option.rknn_variant or option.rknn_only or option.rknn_explore:
        terminalreporter.write_line(
            "pytest-rknn: no test here runs the matrix's cells (they ship with the plugin): "
            "run `pytest-rknn run ARGS` (= `pytest --pyargs pytest_rknn.cases ARGS`)",
            yellow=True,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(SESSION, None)
    if state is not None:
        state.close()
