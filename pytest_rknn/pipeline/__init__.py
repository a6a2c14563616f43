"""The cell pipeline: which cells exist (``plan``), how one runs (``run``), what it is made of
on the host (``materials``, ``subjects``), what is reused (``cache``), the per-process state
(``session``), the targets (``targets``) and ``--rknn-explore`` (``explore``)."""
