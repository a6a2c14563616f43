"""Whether an environment's installed files are the ones their wheels installed.

uv fills every environment from one cache by hard links, so a file edited in place in one
environment is edited in the cache too, and a rebuild would link the same edited file back.
:func:`damaged` compares each installed file with the sha256 its ``*.dist-info/RECORD`` names
(the hash the wheel shipped) and returns the distributions whose files differ; a build cleans
those from the cache and installs them again (see ``ManagedEnv.create``). It reads every
installed file once: a few seconds for a toolkit environment (1.2 GB).
"""

from __future__ import annotations

import base64
import csv
import hashlib
from pathlib import Path


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def _dist_name(record: Path) -> str:
    """``torch`` for ``.../torch-2.4.1.dist-info/RECORD``."""
    return record.parent.name.removesuffix(".dist-info").rsplit("-", 1)[0]


def damaged(env_path: Path) -> dict[str, list[str]]:
    """The distributions in the environment at ``env_path`` whose installed files differ from
    (or are missing against) their RECORD, with up to three such files each."""
    found: dict[str, list[str]] = {}
    for site in Path(env_path).glob("lib/python*/site-packages"):
        for record in sorted(site.glob("*.dist-info/RECORD")):
            try:
                rows = list(csv.reader(record.read_text(encoding="utf-8").splitlines()))
            except (OSError, UnicodeDecodeError, csv.Error):
                continue
            for row in rows:
                if len(row) < 2 or not row[1].startswith("sha256="):
                    continue
                path = (site / row[0]).resolve()
                try:
                    same = _digest(path) == row[1].removeprefix("sha256=")
                except OSError:
                    same = False
                if not same:
                    files = found.setdefault(_dist_name(record), [])
                    if len(files) < 3:
                        files.append(row[0])
    return found
