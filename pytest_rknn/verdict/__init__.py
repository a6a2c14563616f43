"""Where a cell's verdict is made: ``judge`` (status from the toolkit's answer and the
reference), ``tolerance`` (metrics and bounds), ``signatures`` and ``logtext`` (error keys)."""
