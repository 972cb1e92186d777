"""Altair charts: every axis labelled, percentages as percentages, the answer highlighted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd

PRIMARY = "#4F46E5"
MUTED = "#C7CBE3"
PALETTE = ["#4F46E5", "#0EA5A4", "#F59E0B", "#EC4899", "#64748B", "#22C55E", "#EF4444", "#8B5CF6"]


def _legend() -> alt.Legend:
    """Compact, below the plot, two columns: fits a phone and does not squeeze the plot."""
    return alt.Legend(orient="bottom", direction="horizontal", columns=2, title=None, symbolSize=70,
                      labelFontSize=11, rowPadding=2, columnPadding=14, offset=8, padding=0, labelLimit=160)  # fmt: skip


def probabilities(probs: Sequence[float], winner: int, *, height: int = 250) -> alt.Chart:
    df = pd.DataFrame({"digit": [str(d) for d in range(10)], "probability": [float(p) for p in probs]})
    df["answer"] = ["the answer" if d == winner else "other digits" for d in range(10)]
    df["label"] = [f"{p * 100:.0f}%" if p >= 0.005 else "" for p in df["probability"]]
    base = alt.Chart(df).encode(
        x=alt.X("digit:N", title="digit", sort=None, axis=alt.Axis(labelAngle=0, labelFontSize=13)),
        y=alt.Y("probability:Q", title="probability", scale=alt.Scale(domain=[0, 1]),
                axis=alt.Axis(format="%", tickCount=5)),
        tooltip=[alt.Tooltip("digit:N"), alt.Tooltip("probability:Q", format=".1%")],
    )  # fmt: skip
    bars = base.mark_bar(cornerRadiusTopLeft=3, cornerRadiusTopRight=3).encode(
        color=alt.Color("answer:N", scale=alt.Scale(domain=["the answer", "other digits"], range=[PRIMARY, MUTED]),
                        legend=None)
    )  # fmt: skip
    text = base.mark_text(dy=-7, fontSize=11, color="#41465F").encode(text="label:N")
    return (bars + text).properties(height=height, title="Probability of each digit")


def probabilities_html(probs: Sequence[float], winner: int) -> str:
    """The probability of each digit as plain HTML bars (styled by common.CSS), to be written in the same
    element as the answer card: one delta, so the browser can never show the answer of one drawing
    beside the chart of another (a Vega chart re-renders on its own, a few hundred ms later)."""
    cols = []
    for digit, p in enumerate(probs):
        height = min(max(float(p), 0.0), 1.0) * 100
        value = f'<span class="dl-val" style="bottom:{height:.1f}%">{height:.0f}%</span>' if height >= 0.5 else ""
        win = " dl-win" if digit == winner else ""
        cols.append(f'<div class="dl-barcol"><div class="dl-bar{win}" style="height:{height:.1f}%"></div>{value}</div>')
    grid = "".join(f'<div class="dl-grid" style="bottom:{t}%"><span>{t}%</span></div>' for t in (0, 25, 50, 75, 100))
    digits = "".join(f"<span>{d}</span>" for d in range(10))
    return (
        f'<figure class="dl-probs" role="img" data-testid="dl-chart" aria-label="{probabilities_alt(probs)}">'
        "<figcaption>Probability of each digit</figcaption>"
        f'<div class="dl-plot" aria-hidden="true">{grid}<div class="dl-bars">{"".join(cols)}</div></div>'
        f'<div class="dl-xaxis" aria-hidden="true">{digits}</div>'
        '<div class="dl-axis-title" aria-hidden="true">digit</div></figure>'
    )


def probabilities_alt(probs: Sequence[float]) -> str:
    """The chart as text (screen readers, tests): 'Probabilities: 0 0.1%, 1 0.0%, …'."""
    return "Probabilities: " + ", ".join(f"{d} {float(p) * 100:.1f}%" for d, p in enumerate(probs))


def compare(rows: list[dict[str, Any]], *, height: int = 330) -> alt.Chart:
    """rows: {model, digit, probability} — one group of bars per digit, one bar per model."""
    df = pd.DataFrame(rows)
    models = list(dict.fromkeys(df["model"]))
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("digit:N", title="digit", axis=alt.Axis(labelAngle=0, labelFontSize=13)),
            xOffset=alt.XOffset("model:N", sort=models),
            y=alt.Y("probability:Q", title="probability", scale=alt.Scale(domain=[0, 1]),
                    axis=alt.Axis(format="%", tickCount=5)),
            color=alt.Color("model:N", title=None, sort=models, scale=alt.Scale(range=PALETTE), legend=_legend()),
            tooltip=["model:N", "digit:N", alt.Tooltip("probability:Q", format=".1%")],
        )
        .properties(height=height, title="Probabilities, model by model")
    )  # fmt: skip


def confusion(matrix: Sequence[Sequence[int | float]], *, title: str = "Confusion matrix", height: int = 380,
              normalise: bool = True) -> alt.Chart:  # fmt: skip
    """Rows = true digit, columns = predicted digit. Colour = share of the row; the text = the count."""
    rows = []
    for t, row in enumerate(matrix):
        total = float(sum(row)) or 1.0
        for p, n in enumerate(row):
            rows.append({"true digit": str(t), "predicted digit": str(p), "count": int(n),
                         "share": (float(n) / total) if normalise else float(n)})  # fmt: skip
    df = pd.DataFrame(rows)
    df["label"] = [str(n) if n else "" for n in df["count"]]
    df["dark"] = df["share"] > 0.5
    digits = [str(d) for d in range(10)]
    base = alt.Chart(df).encode(
        x=alt.X(
            "predicted digit:N", sort=digits, axis=alt.Axis(labelAngle=0, orient="top", labelOverlap=False)
        ),
        y=alt.Y("true digit:N", sort=digits, axis=alt.Axis(labelOverlap=False)),
    )
    cells = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.condition(
            "datum.count > 0",
            alt.Color("share:Q", title="share of row", scale=alt.Scale(range=["#E4E2FB", "#3F37C9"], domain=[0, 1]),
                      legend=None),
            alt.value("#F5F6FA"),
        ),
        tooltip=["true digit:N", "predicted digit:N", "count:Q", alt.Tooltip("share:Q", format=".1%", title="share")],
    )  # fmt: skip
    text = base.mark_text(fontSize=10).encode(
        text="label:N",
        color=alt.condition("datum.dark", alt.value("white"), alt.value("#1F2340")),
    )
    return (cells + text).properties(height=height, title=title)


def accuracy_by_model(rows: list[dict[str, Any]], *, height: int | None = None) -> alt.Chart:
    """rows: {model, accuracy, labelled}. The axis shows 0 % and 100 % at its ends, flush with the plot: at 390 px
    its labels 20 %, 60 % and 100 % were left out (they overlapped) and its "100%" ran past the chart, so it read
    0 % … 80 % under bars reaching 100 % (a tour); a model's name in brackets goes on a second line ("CNN" over
    "(convolutional network)"), which leaves the bars more of a phone's width."""
    df = pd.DataFrame(rows)
    df["label"] = [f"{a * 100:.0f}% of {n}" for a, n in zip(df["accuracy"], df["labelled"], strict=True)]
    base = alt.Chart(df).encode(
        y=alt.Y("model:N", title=None, sort=alt.EncodingSortField("accuracy", op="max", order="descending"),
                axis=alt.Axis(labelLimit=150, labelExpr="split(replace(datum.label, ' (', '\\n('), '\\n')", labelLineHeight=13)),
        x=alt.X("accuracy:Q", title="accuracy on labelled drawings", scale=alt.Scale(domain=[0, 1]),
                axis=alt.Axis(format="%", values=[0, 0.25, 0.5, 0.75, 1], labelFlush=True, labelOverlap=False)),
        tooltip=["model:N", alt.Tooltip("accuracy:Q", format=".1%"), alt.Tooltip("labelled:Q", title="labelled")],
    )  # fmt: skip
    bars = base.mark_bar(color=PRIMARY, cornerRadiusTopRight=3, cornerRadiusBottomRight=3)
    # the label sits inside a long bar (so it never runs off a narrow chart) and after a short one
    inside = base.transform_filter("datum.accuracy >= 0.45").mark_text(
        align="right", dx=-5, fontSize=11, color="white", fontWeight="bold").encode(text="label:N")  # fmt: skip
    outside = base.transform_filter("datum.accuracy < 0.45").mark_text(
        align="left", dx=4, fontSize=11, color="#1F2340").encode(text="label:N")  # fmt: skip
    return (bars + inside + outside).properties(
        height=height or 130 + 30 * len(df), title="Accuracy per model",
        padding={"left": 0, "top": 5, "bottom": 5, "right": 12},  # (the flush "100%" label ends at the plot's edge)
    )


def mistakes(rows: list[dict[str, Any]], *, title: str = "MNIST test set", unit: str = "test digits") -> alt.Chart:
    """rows: {model, accuracy} -> mistakes per 1,000 `unit` (differences of 0.5 % are visible). The title is short
    with what the bars count under it, and the axis says "mistakes per 1,000": at 390 px a one-line title
    ("Real handwriting of other writers: fewer mis…") and the axis's title were cut off."""
    df = pd.DataFrame(rows)
    df["mistakes"] = (1 - df["accuracy"]) * 1000
    df["label"] = [f"{m:.0f}" for m in df["mistakes"]]
    # The accuracy goes under the model's name (a two-line axis label), not after the bar, where a
    # phone's narrow plot cut "98.46 % right" off.
    df["name"] = [f"{m}\n{a * 100:.2f} % right" for m, a in zip(df["model"], df["accuracy"], strict=True)]
    base = alt.Chart(df).encode(
        y=alt.Y("name:N", title=None, sort="x",
                axis=alt.Axis(labelLimit=200, labelFontSize=12, labelExpr="split(datum.label, '\\n')")),
        x=alt.X("mistakes:Q", title="mistakes per 1,000",
                scale=alt.Scale(domain=[0, max(10.0, float(df["mistakes"].max()) * 1.45)]),
                axis=alt.Axis(tickCount=6, labelFlush=True)),  # (the last tick's label was cut at the edge)
        tooltip=["model:N", alt.Tooltip("accuracy:Q", format=".2%", title="accuracy"),
                 alt.Tooltip("mistakes:Q", format=".1f")],
    )  # fmt: skip
    bars = base.mark_bar(color=PRIMARY, cornerRadiusTopRight=3, cornerRadiusBottomRight=3)
    text = base.mark_text(align="left", dx=4, fontSize=11, color="#1F2340").encode(text="label:N")
    subtitle = f"mistakes per 1,000 {unit}: fewer is better"
    return (bars + text).properties(height=120 + 40 * len(df), title=alt.Title(title, subtitle=subtitle))


def accuracy_over_time(rows: list[dict[str, Any]], *, height: int = 330) -> alt.Chart:
    """rows: {date, model, accuracy, labelled}. No y axis title: the chart's title says it, and at 390 px
    the rotated "accuracy" was cut at the left edge ("ccuracy", a tour), as the Models page's were."""
    df = pd.DataFrame(rows)
    df["date"] = pd.to_datetime(df["date"])
    return (
        alt.Chart(df)
        .mark_line(point=alt.OverlayMarkDef(size=60, filled=False, strokeWidth=2))
        .encode(
            x=alt.X("date:T", title="day", axis=alt.Axis(format="%d %b", labelAngle=0, tickCount="day")),
            y=alt.Y("accuracy:Q", title=None, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            color=alt.Color("model:N", title=None, scale=alt.Scale(range=PALETTE), legend=_legend()),
            # a shape per model too: models with the same accuracy on a day share a point, and one colour
            # alone hid the others (five models showed three dots)
            shape=alt.Shape("model:N", title=None, legend=_legend()),
            tooltip=["model:N", alt.Tooltip("date:T", format="%d %b %Y"), alt.Tooltip("accuracy:Q", format=".1%"),
                     alt.Tooltip("labelled:Q", title="labelled")],
        )
        .properties(height=height, title="Accuracy per day")
    )  # fmt: skip


def example_probabilities(probs: Sequence[float], winner: int) -> alt.Chart:
    return probabilities(probs, winner, height=210).properties(title="")
