"""``python -m pytest_rknn.cli``: the ``pytest-rknn`` command."""

import sys

from pytest_rknn.cli.main import main

sys.exit(main())
