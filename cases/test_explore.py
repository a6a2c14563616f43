"""The clone's spelling of ``--rknn-explore``: the items of :mod:`pytest_rknn.cases`."""

from pytest_rknn.cases.test_explore import test_explore

__all__ = ["test_explore"]
