"""What a run produces: the status vocabulary, the cell record, the matrix and its journal.

``status`` (the one list of statuses), ``cell`` (the typed record of one cell), ``matrix`` (the
versioned document), ``journal`` (crash-safe files, the run lock) and ``compare`` (merge, diff).
"""
