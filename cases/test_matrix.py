"""The clone's spelling of the matrix: ``pytest cases/`` runs :mod:`pytest_rknn.cases`' cells."""

from pytest_rknn.cases.test_matrix import test_cell

__all__ = ["test_cell"]
