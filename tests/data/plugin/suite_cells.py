"""The cells of a pytester suite: copied in as test_rknn_cells.py (like cases/test_matrix.py)."""


def test_cell(rknn_cell):
    outcome = rknn_cell.check()
    assert outcome.status == "pass", outcome.message
