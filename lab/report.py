"""A report of ``lab.evaluate`` as people read it: a Markdown table and a PNG (hit@k curves,
latency per stage).
"""

from __future__ import annotations

from pathlib import Path

# ---------------------------------------------------------------------------- output


def markdown(report: dict[str, dict[str, object]]) -> str:
    names = list(report)
    metric_names = list(report[names[0]]["metrics"])
    lines = [
        "| run | " + " | ".join(metric_names) + " | latency p50 / p95 |",
        "|---" * (len(metric_names) + 2) + "|",
    ]
    for name in names:
        entry = report[name]
        values = " | ".join(f"{entry['metrics'][m]:.3f}" for m in metric_names)
        total50 = sum(v["p50"] for v in entry["latency_ms"].values())
        total95 = sum(v["p95"] for v in entry["latency_ms"].values())
        lines.append(f"| {name} | {values} | {total50:.0f} / {total95:.0f} ms |")
    return "\n".join(lines)


def plot(report: dict[str, dict[str, object]], path: Path, title: str) -> None:
    """Left: hit@k against k for every run. Right: p50 latency per stage, stacked, per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = list(report)
    figure, (curves, bars) = plt.subplots(
        1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]}
    )
    for name in names:
        curve = report[name]["hit_curve"]
        curves.plot(
            range(1, len(curve) + 1),
            curve,
            marker="o",
            markersize=3,
            linestyle="-" if report[name].get("reranker") or "+" in name else "--",
            label=name,
        )
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves.set_xlabel("k (passages kept)")
    curves.set_ylabel("hit@k (gold passage among the first k)")
    curves.set_ylim(0, 1.02)
    curves.grid(alpha=0.3)
    curves.legend(fontsize=8, loc="lower right")
    stages = list(dict.fromkeys(s for name in names for s in report[name]["latency_ms"]))
    bottoms = [0.0] * len(names)
    for stage in stages:
        values = [report[name]["latency_ms"].get(stage, {}).get("p50", 0.0) for name in names]
        bars.barh(names, values, left=bottoms, label=stage)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    bars.set_xlabel("latency per query, p50 (ms)")
    bars.invert_yaxis()
    bars.tick_params(axis="y", labelsize=8)
    bars.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
