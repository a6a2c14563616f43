"""Which sequence lengths each transformer family serves, per toolkit and chip (--rknn-dims).

Exports one tiny model per text family (the curated hf rows' shape: one layer, hidden 64, 4
heads, peaked attention, a right-padded mask where the family takes one) with a free ``seq``
axis (TorchScript, ``dynamic_axes``), then runs the plugin on them as ``--rknn-model`` with
``--rknn-dims seq=L1|L2|...``, one toolkit at a time, and prints for each family, toolkit and
chip every length's verdict, its worst relative L2 error and the compiler's internal memory,
and how the runtime answered the unlisted length.

    python bench/dynamic_lengths.py --out /tmp/lengths --toolkits 2.3.2,2.5.0
    python bench/dynamic_lengths.py --out /tmp/lengths --table   # the tables of the matrices

Real toolkits only (the project's environments); nothing here is a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

from pytest_rknn.variants.families import GQA_FAMILIES, FamilySpec, family_inputs
from pytest_rknn.variants.hf_export import export_families

CELLS = """
def test_cell(rknn_cell):
    outcome = rknn_cell.check()
    assert outcome.status == "pass", outcome.message
"""


def export(families: list[str], attn: str, longest: int, out: Path, python: Path) -> list[Path]:
    """One model per family, its ``seq`` free, its position table long enough for ``longest``."""
    jobs = []
    for family in families:
        spec = FamilySpec(
            family=family,
            attn=attn,
            hidden=64,
            heads=4,
            kv_heads=2 if family in GQA_FAMILIES else 4,
            seq_len=longest,
            mask="pad",
            init="sharp",
            exporter="torchscript",
        )
        example = dataclasses.replace(spec, seq_len=16)
        inputs = family_inputs(example, 0)
        jobs.append((spec, inputs, out / f"{family}_{attn}_dyn.onnx"))
    found = export_families(jobs, python, dynamic_seq=True)
    paths = []
    for (spec, _inputs, path), result in zip(jobs, found, strict=True):
        if isinstance(result, Exception):
            print(f"{spec.family}: export failed: {result}")
            continue
        paths.append(path)
    return paths


def run(models: list[Path], toolkit: str, platforms: str, lengths: str, out: Path) -> Path:
    matrix = out / f"matrix-{toolkit}.json"
    args = [sys.executable, "-m", "pytest", "-p", "no:randomly", "-q", "test_cells.py"]
    args += [f"--rknn-toolkits={toolkit}", f"--rknn-platforms={platforms}", "--rknn-only"]
    args += [f"--rknn-model={m.name}" for m in models]
    args += [f"--rknn-dims=seq={lengths}", f"--rknn-matrix={matrix}", "--rknn-timeout=1200"]
    started = time.monotonic()
    done = subprocess.run(args, cwd=out, capture_output=True, text=True, check=False)
    print(f"# {toolkit}: pytest exit {done.returncode} in {time.monotonic() - started:.0f} s")
    return matrix


def table(matrix: Path) -> None:
    cells = json.loads(matrix.read_text())["cells"]
    for cell in cells:
        name = Path(cell["variant"]["path"]).stem
        head = f"{name:18} {cell['toolkit']:6} {cell['platform']:6} {cell['status']:15}"
        if not cell.get("shapes"):
            print(f"{head} {(cell.get('reason') or '')[:150]}")
            continue
        parts = []
        for shape in cell["shapes"]:
            rels = [m.get("rel_l2") for m in (shape.get("metrics") or {}).values()]
            rel = max((r for r in rels if r is not None), default=None)
            memory = (shape.get("memory") or {}).get("internal_bytes")
            kb = f"{memory / 1024:.0f}KB" if memory is not None else "?"
            text = f"{shape['dims']['seq']}:{shape['status']}"
            text += f"(rel_l2 {rel:.2e}, {kb})" if rel is not None else f"({kb})"
            parts.append(text)
        unlisted = cell.get("unlisted_shape") or {}
        print(
            f"{head} {' '.join(parts)} | unlisted {unlisted.get('dims')}: {unlisted.get('answer')}"
        )
        if cell["status"] != "pass":
            print(f"    reason: {(cell.get('reason') or '')[:300]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--families", default="bert,gpt2,llama,t5")
    parser.add_argument("--attn", default="eager")
    parser.add_argument("--lengths", default="16|32|64|128|256|512")
    parser.add_argument("--toolkits", default="2.2.0,2.3.0,2.3.2,2.5.0")
    parser.add_argument("--platforms", default="rk3566,rk3588")
    parser.add_argument(
        "--torch-python",
        type=Path,
        default=Path.home() / ".cache/pytest-rknn/envs/exporter-cp311/bin/python",
        help="the exporter environment's python (torch and transformers)",
    )
    parser.add_argument("--table", action="store_true", help="print the tables of --out's matrices")
    args = parser.parse_args()
    out = args.out.resolve()
    if args.table:
        for matrix in sorted(out.glob("matrix-*.json")):
            table(matrix)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "test_cells.py").write_text(CELLS)
    python = args.torch_python
    if not python.is_file():
        print(f"no exporter python at {python}: run `pytest-rknn envs` or pass --torch-python")
        return 2
    longest = max(int(v) for v in args.lengths.split("|"))
    models = export(args.families.split(","), args.attn, longest, out, python)
    for toolkit in args.toolkits.split(","):
        table(run(models, toolkit, args.platforms, args.lengths, out))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
