"""Bar chart of segments/s per tool and codec from a results.json (runs in .venv-bench:
matplotlib is a bench-only dependency, never walq's)."""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ORDER = ["local", "limit", "fleet", "s3", "restore"]
TITLES = {
    "local": "local archive",
    "limit": "codec alone (limit)",
    "fleet": "walq fleet",
    "s3": "S3 archive",
    "restore": "restore (restore_command)",
}


def main(src: str, dest: str) -> None:
    with open(src) as f:
        data = json.loads(f.read())
    rows = [s for s in data["series"] if s.get("seg_per_s")]
    if not rows:
        return
    rows.sort(
        key=lambda s: (
            ORDER.index(s["scenario"]) if s["scenario"] in ORDER else 9,
            s["codec"],
            s["tool"],
        )
    )
    labels = [
        f"{TITLES.get(s['scenario'], s['scenario'])} · {s['codec']} · {s['tool']}" for s in rows
    ]
    values = [s["seg_per_s"] for s in rows]
    lows = [s["seg_per_s"] - s["seg_per_s_min"] for s in rows]
    highs = [s["seg_per_s_max"] - s["seg_per_s"] for s in rows]
    colors = []
    for s in rows:
        t = s["tool"]
        colors.append(
            "#1f77b4"
            if t.startswith("walq")
            else "#999999"
            if t == "codec alone"
            else "#d62728"
            if t.startswith("barman")
            else "#2ca02c"
        )
    fig, ax = plt.subplots(figsize=(11, max(4, 0.32 * len(rows) + 1.5)))
    y = range(len(rows))
    ax.barh(list(y), values, xerr=[lows, highs], color=colors, capsize=2)
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("segments/s (16 MiB WAL; median, whiskers min–max; log scale)")
    m = data["machine"]
    ax.set_title(
        f"walq vs Barman vs pgBackRest — {data['corpus']['segments']} real segments, "
        f"{data['rounds']} rounds, {m['cores']} cores ({data['when']})",
        fontsize=10,
    )
    for i, v in enumerate(values):
        ax.text(v * 1.03, i, f"{v:.1f}", va="center", fontsize=7)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(dest, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
