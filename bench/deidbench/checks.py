"""Checks that what was measured did its work: a benchmark of something that did nothing is
worthless."""

from __future__ import annotations

from pathlib import Path


def check_deidentified(source: Path, staged: Path, what: str) -> str:
    """Every source file has an output whose PatientName/PatientID are gone and whose
    DeidentificationMethod is the profile's. Returns a one-line description of what was
    checked; raises RuntimeError when the outputs fall short."""
    from pydicom import dcmread

    sources = sorted(source.rglob("*.dcm"))
    outputs = sorted(staged.rglob("*.dcm"))
    if len(outputs) != len(sources):
        raise RuntimeError(f"{what}: {len(outputs)} output files for {len(sources)} sources")
    original = dcmread(sources[0], stop_before_pixels=True)
    for path in outputs[:: max(1, len(outputs) // 20)]:
        dataset = dcmread(path, stop_before_pixels=True)
        if (str(dataset.get("PatientName", "")) == str(original.PatientName)
                or dataset.get("PatientID", "") == original.PatientID
                or not str(dataset.get("DeidentificationMethod", "")).startswith("Penn_BSC")):
            raise RuntimeError(f"{what}: {path} was not de-identified")
    return (f"{what}: {len(outputs)} outputs for {len(sources)} sources; sampled outputs have "
            "PatientName and PatientID emptied and DeidentificationMethod set")


def counted(counts: dict[str, int]) -> str:
    """``{"pass": 3, "warn": 1}`` as "3 pass, 1 warn"."""
    return ", ".join(f"{count} {status}" for status, count in counts.items())
