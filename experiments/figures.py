"""The adversarial-grid artifact: clean inputs above, adversarial inputs below, with the judge's verdicts."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def adversarial_grid(x: np.ndarray, x_adv: np.ndarray, labels, initial, final, success, max_columns: int = 8):
    """A figure of up to `max_columns` attacked examples, successful ones first."""
    order = np.argsort(~np.asarray(success), kind="stable")[:max_columns]
    columns = max(len(order), 1)
    fig, axes = plt.subplots(2, columns, figsize=(1.6 * columns, 3.6), squeeze=False)
    for column, i in enumerate(order):
        for row, (image, verdict) in enumerate(((x[i], initial[i]), (x_adv[i], final[i]))):
            ax = axes[row, column]
            ax.imshow(_as_image(image), cmap="gray" if image.shape[0] == 1 else None, vmin=0, vmax=1)
            title = f"y={labels[i]} -> {verdict}" if row else f"y={labels[i]}: {verdict}"
            ax.set_title(title, fontsize=8, color="red" if row and success[i] else "black")
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].text(-0.3, 0.5, "clean", transform=axes[0, 0].transAxes, rotation=90, va="center")
    axes[1, 0].text(-0.3, 0.5, "adversarial", transform=axes[1, 0].transAxes, rotation=90, va="center")
    fig.tight_layout()
    return fig


def _as_image(chw: np.ndarray) -> np.ndarray:
    return chw[0] if chw.shape[0] == 1 else np.transpose(chw, (1, 2, 0))
