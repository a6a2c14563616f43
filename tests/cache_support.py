"""A stand-in for pytest's ``config.cache`` in one folder, for tests of the result cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class FolderCache:
    """The part of pytest's ``config.cache`` that the result cache uses, in one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mkdir(self, name: str) -> Path:
        path = self.root / "d" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def get(self, key: str, default: Any) -> Any:
        path = self.root / "v" / key
        return json.loads(path.read_text()) if path.exists() else default

    def set(self, key: str, value: Any) -> None:
        path = self.root / "v" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
