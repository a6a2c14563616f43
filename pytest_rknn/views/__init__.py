"""Views of a matrix: ``text`` (terminal), ``markdown``, ``dashboard`` (HTML); ``tally`` counts."""
