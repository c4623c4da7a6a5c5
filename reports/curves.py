"""Success-vs-queries curves of a sweep's query attacks: one plot per output mode."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

CURVE = "attack_success_rate_at_queries"


def plot_curves(rows: list[dict], folder: Path) -> list[Path]:
    """`curves_<output>.png` in `folder` for each output mode whose runs logged the curve; the paths written."""
    client = MlflowClient()
    by_output: dict[str, list[tuple[dict, list]]] = {}
    for row in rows:
        history = sorted(client.get_metric_history(row["run_id"], CURVE), key=lambda m: m.step)
        if history:
            by_output.setdefault(row["output"], []).append((row, history))
    written = []
    for output, runs in sorted(by_output.items()):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        attacks = sorted({row["attack"] for row, _ in runs})
        colours = {a: plt.cm.tab10(i % 10) for i, a in enumerate(attacks)}
        budgets = sorted({row["budget"] for row, _ in runs}, key=lambda b: float("inf") if b == "null" else int(b))
        styles = {b: ("-", "--", ":", "-.")[i % 4] for i, b in enumerate(budgets)}  # colour: attack; line: budget
        for row, history in runs:
            budget = "unlimited" if row["budget"] == "null" else row["budget"]
            ax.plot(
                [m.step for m in history],
                [m.value for m in history],
                marker=".",
                color=colours[row["attack"]],
                linestyle=styles[row["budget"]],
                label=f"{row['attack']}, {row['eps']} (budget {budget})",
            )
        ax.set_xscale("log")
        ax.set_xlabel("queries per example")
        ax.set_ylabel("attack success rate")
        ax.set_ylim(0, 1)
        ax.set_title(f"success vs. queries, output={output}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        path = folder / f"curves_{output}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
