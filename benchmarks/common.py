"""Shared by the benchmark scripts: run campusgps commands and prepare a simulated campus once."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def cli(*argv) -> None:
    """Run ``campusgps ARGV...`` in-process; a failing step stops the benchmark with its exit status."""
    from campusgps.cli.main import main

    print("$ campusgps " + " ".join(map(str, argv)), file=sys.stderr, flush=True)
    rc = main([str(a) for a in argv])
    if rc != 0:
        raise SystemExit(f"campusgps {' '.join(map(str, argv))} failed with exit status {rc}")


def simulated_campus(work: Path, preset: str, seed: int, *synth_args, queries: bool = True):
    """synth -> ingest the mapping photos -> split (``--test 0``: the query session is the test set) ->
    ingest the queries. Each step is skipped when its output exists.

    Returns ``(sim_dir, mapping_dataset_dir, query_dataset_dir or None)``; ``synth_args`` (e.g.
    ``"--photos", 400``) become part of the folder names so different campuses never mix."""
    tag = "-".join([preset, str(seed), *(str(a).lstrip("-") for a in synth_args)])
    sim, ds_dir, q_dir = work / f"sim-{tag}", work / f"ds-{tag}", work / f"queries-{tag}"
    if not (sim / "truth.csv").exists():
        cli("synth", sim, "--preset", preset, "--seed", seed, *synth_args, "--overwrite")
    if not (ds_dir / "manifest.parquet").exists():
        cli("ingest", sim / "photos", "--out", ds_dir)
        cli("split", ds_dir, "--test", "0", "--seed", seed)
    if queries and not (q_dir / "manifest.parquet").exists():
        cli("ingest", sim / "queries", "--out", q_dir)
    return sim, ds_dir, (q_dir if queries else None)
