"""``--rknn-explore``: search the variant space for a failing variant and shrink it.

One pytest item per (platform, toolkit, quant) target. Hypothesis draws variants; each is
converted as a real cell (so every try lands in the matrix too); a variant "fails" when its cell
ends in a failing status. The item fails with the minimal failing variant, its status and
signature, and the command that re-runs exactly that cell.
"""

from __future__ import annotations

import pytest

from pytest_rknn.pipeline.explore_targets import ExploreTarget, explore_targets
from pytest_rknn.pipeline.plan import CellSpec
from pytest_rknn.pipeline.run import Outcome, held_to_npu, run_guarded
from pytest_rknn.pipeline.session import RknnSession
from pytest_rknn.pipeline.subjects import subject_of
from pytest_rknn.variants.explore import find_minimal
from pytest_rknn.variants.families import FamilySpec
from pytest_rknn.variants.spec import VariantSpec
from pytest_rknn.variants.strategies import HOST_FORMS
from pytest_rknn.verdict.rules import Judging
from pytest_rknn.views.text import rerun_command

__all__ = ["ExploreTarget", "Explorer", "explore_targets"]


class Explorer:
    """What the ``rknn_explore`` fixture gives a test: run the search for one target."""

    def __init__(
        self, target: ExploreTarget, session: RknnSession, judging: Judging, records: list
    ) -> None:
        self.target = target
        self.session = session
        self.judging = judging
        self.records = records
        self.tried: dict[str, Outcome] = {}

    def outcome(self, spec: VariantSpec | FamilySpec) -> Outcome:
        if spec.id not in self.tried:
            cell = CellSpec(subject_of(spec), *self._coords())
            judged = run_guarded(cell, self.session, self.judging)
            outcome = held_to_npu(judged, self.session.settings.require_npu)
            self.tried[spec.id] = outcome
            self.records.append(outcome.record)
        return self.tried[spec.id]

    def _coords(self) -> tuple[str, str, str]:
        return (self.target.platform, self.target.toolkit, self.target.quant)

    def search(self) -> VariantSpec | FamilySpec | None:
        settings = self.session.settings
        python, why = self.session.python_for(self.target.toolkit)
        if python is None:
            pytest.fail(f"env-error: {why}", pytrace=False)
        return find_minimal(
            lambda spec: self.outcome(spec).status.failing,
            profile=settings.profile,
            seed=settings.seed,
            max_examples=settings.explore_examples,
            forms=settings.forms or HOST_FORMS,
        )

    def check(self) -> VariantSpec | FamilySpec | None:
        """Search; fail with the minimal failing variant and how to re-run it, if one exists."""
        found = self.search()
        tried = len(self.tried)
        if found is None:
            return None
        record = self.tried[found.id].record
        t = self.target
        rerun = rerun_command("cases/", (), record)
        pytest.fail(
            f"minimal failing variant for {t.id} after {tried} conversions: {found.id}\n"
            f"  status: {record.status.value}; signature: {record.signature}\n"
            f"  spec: {found.to_dict()}\n"
            f"  re-run it: {rerun}",
            pytrace=False,
        )
        return found
