"""Training curves from the trainer's metrics.csv (matplotlib, Agg canvas).

metrics.csv has the columns step, epoch, train_loss, eval_nll, eval_accuracy, lr, tokens_per_s; evaluation
columns are empty on most rows. Unknown extra columns are ignored, missing ones leave their panel empty.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

from ..util import StageError, atomic_path

log = logging.getLogger(__name__)

COLUMNS = ("step", "epoch", "train_loss", "eval_nll", "eval_accuracy", "lr", "tokens_per_s")


def read_metrics(metrics_csv: str | Path) -> dict[str, list[tuple[float, float]]]:
    """{column: [(step, value), ...]} for every numeric column, skipping empty or non-numeric cells.

    Raises StageError naming the file when it is missing, empty or has no step column.
    """
    path = Path(metrics_csv)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            if "step" not in fields:
                raise StageError(path, "not a metrics file (no 'step' column in the header)")
            series: dict[str, list[tuple[float, float]]] = {f: [] for f in fields if f != "step"}
            for row in reader:
                row = {(k or "").strip(): v for k, v in row.items()}
                step = _num(row.get("step"))
                if step is None:
                    continue
                for name in series:
                    value = _num(row.get(name))
                    if value is not None:
                        series[name].append((step, value))
    except FileNotFoundError:
        raise StageError(path, "metrics file not found") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise StageError(path, f"not a readable CSV file ({exc})") from None
    return series


def _num(text: str | None) -> float | None:
    if text is None or not str(text).strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def summarize(series: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
    """Last value of each column and the best eval_nll / eval_accuracy (for the report's table)."""
    out = {f"last_{k}": v[-1][1] for k, v in series.items() if v}
    if series.get("eval_nll"):
        out["best_eval_nll"] = min(v for _, v in series["eval_nll"])
    if series.get("eval_accuracy"):
        out["best_eval_accuracy"] = max(v for _, v in series["eval_accuracy"])
    if series.get("train_loss"):
        out["last_step"] = series["train_loss"][-1][0]
    return out


def save_curves(metrics_csv: str | Path, png_path: str | Path, title: str | None = None, dpi: int = 100) -> Path:
    """Draw loss (train and eval NLL), eval accuracy, learning rate and throughput against step as one PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = read_metrics(metrics_csv)
    png_path = Path(png_path)
    fig = Figure(figsize=(11, 7), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    panels = [
        (axes[0][0], "loss (nats/token)", [("train_loss", "train loss", "-"), ("eval_nll", "eval NLL", "o-")], False),
        (axes[0][1], "eval accuracy", [("eval_accuracy", "eval accuracy", "o-")], False),
        (axes[1][0], "learning rate", [("lr", "lr", "-")], True),
        (axes[1][1], "throughput (tokens/s)", [("tokens_per_s", "tokens/s", "-")], False),
    ]
    drawn = 0
    for ax, label, lines, logy in panels:
        any_line = False
        for col, name, style in lines:
            points = series.get(col) or []
            if not points:
                continue
            xs, ys = zip(*points)
            ax.plot(xs, ys, style, label=name, markersize=3 if "o" in style else 0, linewidth=1.2)
            any_line = True
            drawn += 1
        if any_line:
            if logy and all(y > 0 for col, _, _ in lines for _, y in series.get(col) or []):
                ax.set_yscale("log")
            if len(lines) > 1:
                ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="#888888")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if drawn == 0:
        log.warning("%s: no numeric rows; the curves are empty", metrics_csv)
    fig.suptitle(title or f"training curves — {Path(metrics_csv).name}", fontsize=11)
    fig.tight_layout()
    try:
        with atomic_path(png_path, suffix=".png") as tmp:
            fig.savefig(str(tmp), format="png", dpi=dpi)
    except OSError as exc:
        raise StageError(png_path, f"cannot write the curves ({exc})") from None
    return png_path
