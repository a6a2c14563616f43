"""The example CI workflow is valid for GitHub (its workflow JSON schema, as vendored by
check-jsonschema) and does what the README promises: a schedule, minimal permissions, a cache
keyed on the environment recipe, reports that survive failures, a diff against the baseline and
the step summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

WORKFLOW = Path(__file__).parents[1] / ".github" / "workflows" / "rknn-matrix.yml"


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "check_jsonschema"]
    command += ["--builtin-schema", "vendor.github-workflows", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_workflow_fits_githubs_schema(tmp_path: Path) -> None:
    result = _validate(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text("name: x\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps: 3\n")
    assert _validate(broken).returncode != 0, "the schema check rejects a broken workflow"


def test_the_workflow_does_what_the_readme_says() -> None:
    flow = YAML(typ="safe").load(WORKFLOW.read_text())
    triggers = flow["on"]
    assert triggers["schedule"][0]["cron"]
    assert flow["permissions"] == {"contents": "read"}
    toolkit, report = flow["jobs"]["toolkit"], flow["jobs"]["report"]
    steps = toolkit["steps"]
    cache = next(s for s in steps if str(s.get("uses", "")).startswith("actions/cache"))
    (keyed,) = [s for s in steps if s.get("id") == "envkey"]
    assert (
        "pytest-rknn envs --cache-key" in keyed["run"] and "${{ matrix.toolkit }}" in keyed["run"]
    )
    assert steps.index(keyed) < steps.index(cache)
    assert "${{ steps.envkey.outputs.key }}" in cache["with"]["key"]
    assert cache["with"]["path"] == ".rknn-envs" and flow["env"]["PYTEST_RKNN_ENVS"].endswith(
        "/.rknn-envs"
    )
    costs = flow["jobs"]["costs"]
    assert toolkit["needs"] == "costs", "every shard job is cut on the one costs file"
    shared = "\n".join(str(s.get("run", "")) for s in steps)
    assert "--rknn-shard ${{ matrix.shard }}/2" in shared
    assert "--rknn-shard-costs costs/rknn-matrix.json" in shared
    uploads = [
        s
        for job in (costs, toolkit, report)
        for s in job["steps"]
        if str(s.get("uses", "")).startswith("actions/upload-artifact")
    ]
    assert len(uploads) == 3
    assert all(s["if"] in ("${{ !cancelled() }}", "${{ always() }}") for s in uploads)
    assert report["if"] == "${{ !cancelled() }}"
    runs = "\n".join(str(s.get("run", "")) for s in report["steps"])
    assert "pytest-rknn merge" in runs and "--history history" in runs
    assert "pytest-rknn diff --markdown baseline/rknn-matrix.json rknn-matrix.json" in runs
    assert runs.count('>> "$GITHUB_STEP_SUMMARY"') == 2
    assert set(report["permissions"]) == {"contents", "actions"}
    assert report["permissions"]["actions"] == "read"
