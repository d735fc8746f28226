"""Overview: how the line is doing, as plots.

Anomaly rate per camera and product over time, frames per second, consumer lag, dead
letters by reason, and the review backlog.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import altair as alt
import pandas as pd
import streamlit as st

from review import auth, data, labels
from review.worker_metrics import SampleHistory, metrics_urls

WINDOWS = {  # label: (span, bucket seconds)
    "Last hour": (timedelta(hours=1), 60),
    "Last 24 hours": (timedelta(days=1), 900),
    "Last 7 days": (timedelta(days=7), 3600),
    "Last 30 days": (timedelta(days=30), 86400),
}


@st.cache_resource(show_spinner=False)
def _samples() -> SampleHistory:
    return SampleHistory()


def render() -> None:
    """Draw the overview page."""
    auth.page_user()
    url = data.database_url()
    st.title("Overview")
    window = st.segmented_control("Window", list(WINDOWS), default="Last 24 hours",
                                  key="overview_window") or "Last 24 hours"
    span, bucket_s = WINDOWS[window]
    since = datetime.now(UTC).replace(second=0, microsecond=0) - span
    points = data.rate_series(url, since, bucket_s)
    frame = pd.DataFrame([p.__dict__ for p in points])
    # Decisions in the window; the backlog of every age (counted up to data.COUNT_CAP).
    counts = data.review_counts(url, since)

    backlog, decided, _ = st.columns([1, 1, 3])
    backlog.metric("Review backlog", labels.count(data.unreviewed_count(url), data.COUNT_CAP))
    decided.metric("Reviewed", f"{sum(n for k, n in counts.items() if k != 'unreviewed'):,}",
                   help=f"Flagged frames of the {window.lower()} that were reviewed.")
    if frame.empty:
        st.info(f"No verdicts in the {window.lower()}.")
    else:
        frame["time"] = pd.to_datetime(frame["bucket_start"])
        left, right = st.columns(2)
        with left:
            st.subheader("Anomaly rate per camera")
            _lines(_rate(frame, "camera_id"), "anomaly rate", "camera_id", "flagged / frames")
            st.subheader("Frames per second")
            throughput = frame.groupby(["time", "camera_id"], as_index=False)["frames"].sum()
            throughput["frames/s"] = throughput["frames"] / bucket_s
            _lines(throughput, "frames/s", "camera_id", "frames per second")
        with right:
            st.subheader("Anomaly rate per product")
            _lines(_rate(frame, "product"), "anomaly rate", "product", "flagged / frames")
            st.subheader("Review backlog over time")
            flagged = frame.groupby("time", as_index=False)[["unreviewed", "flagged"]].sum()
            flagged["reviewed"] = flagged["flagged"] - flagged["unreviewed"]
            st.bar_chart(flagged, x="time", y=["unreviewed", "reviewed"],
                         y_label="flagged frames")
    st.subheader(f"Review decisions, {window.lower()}")
    if counts:
        st.bar_chart(pd.DataFrame({"status": list(counts), "frames": list(counts.values())}),
                     x="status", y="frames", horizontal=True)
    _worker_plots()


def _lines(frame: pd.DataFrame, y: str, color: str, title: str) -> None:
    # Lines with points: a window holding a single bucket still shows its value.
    chart = (alt.Chart(frame).mark_line(point=True)
             .encode(x=alt.X("time:T", title=None), y=alt.Y(f"{y}:Q", title=title),
                     color=alt.Color(f"{color}:N", title=None),
                     tooltip=["time:T", f"{color}:N", alt.Tooltip(f"{y}:Q", format=".3g")]))
    st.altair_chart(chart, width="stretch")


def _rate(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    grouped = frame.groupby(["time", by], as_index=False)[["flagged", "frames"]].sum()
    grouped["anomaly rate"] = grouped["flagged"] / grouped["frames"]
    return grouped


def _worker_plots() -> None:
    urls = metrics_urls()
    lag_column, dlq_column = st.columns(2)
    lag_column.subheader("Consumer lag")
    dlq_column.subheader("Dead letters by reason")
    if not urls:
        message = ("Lag and dead letters are worker metrics: set AGPT_WORKER_METRICS_URLS to "
                   "the workers' /metrics URLs (agpt worker --metrics-port) to plot them here.")
        lag_column.info(message)
        dlq_column.info(message)
        return
    history = _samples().refresh(urls)
    lags = [{"time": pd.Timestamp(s.at, unit="s", tz="UTC"), "worker": url, "lag": s.lag}
            for url, samples in history.items() for s in samples if s.lag is not None]
    failing = [f"{url}: {samples[-1].error}" for url, samples in history.items()
               if samples and samples[-1].error]
    for line in failing:
        lag_column.warning(f"Not answering: {line}")
    if lags:
        with lag_column:
            _lines(pd.DataFrame(lags), "lag", "worker", "messages behind")
    reasons: dict[str, float] = {}
    for samples in history.values():
        latest = next((s for s in reversed(samples) if s.error is None), None)
        if latest is not None:
            for reason, count in latest.dead_letters.items():
                reasons[reason] = reasons.get(reason, 0.0) + count
    if reasons:
        dlq_column.bar_chart(pd.DataFrame({"reason": list(reasons),
                                           "dead letters": list(reasons.values())}),
                             x="reason", y="dead letters", horizontal=True)
    else:
        dlq_column.caption("No dead letters since the workers started.")


if __name__ == "__main__":
    render()
