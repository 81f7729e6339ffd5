"""Training curves: loss and validation metrics per epoch drawn to a PNG (users judge the lr from it)."""

from __future__ import annotations

from pathlib import Path


def plot_history(history: list[dict], path: str | Path, monitor: str | None = None,
                 best_epoch: int | None = None) -> Path:
    """Draw train/val loss (left), other validation metrics (middle) and lr (right) against epoch.

    history: one dict per epoch with "epoch", "train_loss", "lr" and any "val_*" metrics.
    The best epoch of `monitor` is marked with a dashed line. Returns the PNG path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = [int(h["epoch"]) for h in history]
    loss_keys = [k for k in ("train_loss", "val_loss") if any(k in h for h in history)]
    skip = {"epoch", "lr", "train_loss", "val_loss", "step"}
    metric_keys = sorted({k for h in history for k, v in h.items()
                          if k not in skip and isinstance(v, (int, float))})

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, keys, title in ((axes[0], loss_keys, "loss"), (axes[1], metric_keys, "validation metrics"),
                            (axes[2], ["lr"], "learning rate (end of epoch)")):
        for k in keys:
            xs = [e for e, h in zip(epochs, history) if k in h]
            ys = [float(h[k]) for h in history if k in h]
            ax.plot(xs, ys, marker="o", markersize=3, label=k)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1,
                       label=f"best {monitor}" if monitor else "best")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if keys:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if loss_keys and all(float(h.get(k, 1.0)) > 0 for h in history for k in loss_keys):
        axes[0].set_yscale("log")
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.14, top=0.91, wspace=0.25)  # tight_layout costs ~1 s
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
