"""Repository-level pytest configuration (kept empty of imports: ``pytest cases/`` loads it).

The hypothesis profiles for the plugin's own property tests are registered by
``tests/conftest.py``.
"""
