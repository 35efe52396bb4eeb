"""Convert the transcribed llm-d measurements into the project's tidy schema.

Run once from the repository root:

    python tools/import_llmd_measurements.py ../shared/data/llm-d-h100-llama-3.1-70b-isl10k-osl1k.csv

It adds the ``deployment`` label and ``family`` columns and writes
``data/llmd_h100_llama31_70b_isl10k_osl1k.csv``. The numbers are not changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from servingmodel.measurements import deployment_family, deployment_label


def main(src: str) -> None:
    raw = pd.read_csv(src, dtype=str, keep_default_na=False)
    rows = []
    for _, r in raw.iterrows():
        d = r.to_dict()
        d["deployment"] = deployment_label(
            d["kind"], d["tp"], d["replicas"], d["p_tp"], d["p_replicas"], d["d_tp"], d["d_replicas"]
        )
        d["family"] = deployment_family(d["kind"], d["tp"])
        rows.append(d)
    out = pd.DataFrame(rows)
    cols = ["deployment", "family"] + [c for c in raw.columns]
    dest = Path(__file__).resolve().parents[1] / "data" / "llmd_h100_llama31_70b_isl10k_osl1k.csv"
    out[cols].to_csv(dest, index=False)
    print(f"wrote {len(out)} rows")


if __name__ == "__main__":
    main(sys.argv[1])
