"""The adversarial-grid artifact: clean inputs above, adversarial inputs below, with the judge's verdicts.

The grid is one image (a mosaic of the examples) on one set of axes, so it renders in a fraction of the time
sixteen subplots and a tight layout take; the verdicts are text above each tile."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def adversarial_grid(
    x: np.ndarray, x_adv: np.ndarray, labels, initial, final, success, class_names=None, max_columns: int = 8
):
    """A figure of up to `max_columns` attacked examples, successful ones first; verdicts by their class names."""
    name = (lambda label: str(label)) if class_names is None else (lambda label: class_names[int(label)])
    order = np.argsort(~np.asarray(success), kind="stable")[:max_columns]
    columns = max(len(order), 1)
    channels, height, width = x.shape[1:]
    pad = max(1, height // 4)  # room between tiles
    tile_h, tile_w = height + pad, width + pad
    mosaic = np.ones((2 * tile_h, columns * tile_w, channels), dtype=np.float32)
    fig, ax = plt.subplots(figsize=(1.6 * columns, 3.6))
    for column, i in enumerate(order):
        for row, (image, verdict) in enumerate(((x[i], initial[i]), (x_adv[i], final[i]))):
            top, left = row * tile_h + pad, column * tile_w
            mosaic[top : top + height, left : left + width] = np.transpose(image, (1, 2, 0))
            truth, said = name(labels[i]), name(verdict)
            title = f"y={truth} -> {said}" if row else f"y={truth}: {said}"
            color = "red" if row and success[i] else "black"
            ax.text(left + width / 2, top - 0.5, title, ha="center", va="bottom", fontsize=8, color=color)
    image = mosaic[..., 0] if channels == 1 else mosaic
    ax.imshow(image, cmap="gray" if channels == 1 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([pad + height / 2, tile_h + pad + height / 2], ["clean", "adversarial"], rotation=90, va="center")
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)
    fig.subplots_adjust(left=0.06, right=0.99, top=0.95, bottom=0.02)
    return fig
