"""The JUnit XML view of a cell: its testcase's classname and properties (with ``--junitxml``)."""

from __future__ import annotations

import pytest

from pytest_rknn.results.cell import CellRecord
from pytest_rknn.views.placement import junit_properties as placement_properties


def junit_properties(config: pytest.Config, report: pytest.TestReport, cell: CellRecord) -> None:
    """With ``--junitxml``: the cell's testcase gets a classname per target
    (``rknn.rk3588.2_3_2.fp16``, so CI test views group by chip and version) and properties
    (``rknn.status``, ``rknn.signature``, ``rknn.platform``, ``rknn.toolkit``, ``rknn.quant``,
    ``rknn.variant``, ``rknn.<output>.<metric>`` for cosine, rel_l2, max_abs_rms and max_abs,
    ``rknn.warning``, ``rknn.calibration`` and ``rknn.bounds_rule`` when the cell has them, and
    its placement: ``rknn.npu_ops``, ``rknn.cpu_ops``, ``rknn.attention_on_npu``,
    ``rknn.memory_<kind>_bytes``)."""
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - pytest moved it; JUnit then lacks our fields
        return
    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    reporter = xml.node_reporter(report)
    toolkit = cell.toolkit.replace(".", "_")
    reporter.add_attribute("classname", f"rknn.{cell.platform}.{toolkit}.{cell.quant}")
    fields = {
        "status": cell.status.value,
        "signature": cell.signature or "",
        "platform": cell.platform,
        "toolkit": cell.toolkit,
        "quant": cell.quant,
        "variant": cell.variant_id,
    }
    if cell.warning:
        fields["warning"] = cell.warning
    fields.update(placement_properties(cell))
    if cell.calibration:
        from pytest_rknn.views.dashdata import calibration_text

        fields["calibration"] = calibration_text(cell.calibration)
    if cell.bounds_rule:
        fields["bounds_rule"] = cell.bounds_rule
    for output, metrics in sorted((cell.metrics or {}).items()):
        for metric in ("cosine", "rel_l2", "max_abs_rms", "max_abs"):
            if metrics.get(metric) is not None:
                fields[f"{output}.{metric}"] = metrics[metric]
    for name, value in fields.items():
        reporter.add_property(f"rknn.{name}", str(value))
