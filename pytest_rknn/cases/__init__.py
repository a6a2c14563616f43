"""The compatibility matrix's test items, shipped with the plugin.

``pytest --pyargs pytest_rknn.cases`` (or ``pytest-rknn run``) runs them from any folder; the
clone's ``cases/`` re-exports them so that ``pytest cases/`` keeps its node ids.
"""
