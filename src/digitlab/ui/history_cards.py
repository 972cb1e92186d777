"""History on a phone: the prediction log and the Numbers as one card per row, every field on the screen.

Up to 640 px wide the tables are hidden and these cards shown (`style.html`): at 390 px the log's grid showed its
first four columns and cut the fifth's header ("right?" at x 374), and the Numbers table cut "When (UTC)" to
"Wh (UT" (a newcomer's tour); both scrolled sideways with nothing saying so. The cards hold the same rows (built
once, by `views/history.py`), so the two never disagree.

A page turned there brings the log's heading back to the screen (`page_turned_script`): the pager is under 25 cards,
and a short last page shortened the page under the person, its few cards above the screen (at 390x844 the heading
went to y -1676, the first card to -1623: empty space shown)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from digitlab.ui.common import esc


def _when(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NaT:
        return "—"
    ts = pd.Timestamp(value)
    return f"{ts.day} {ts:%b %Y, %H:%M:%S}"


def _mark(right: str) -> str:
    """'✓ right' / '✗ wrong' coloured; '—' (nobody said) as 'no answer'."""
    if right.startswith("✓"):
        return f'<span class="dl-right">{esc(right)}</span>'
    if right.startswith("✗"):
        return f'<span class="dl-wrong">{esc(right)}</span>'
    return ""


def log_cards_html(rows: list[dict[str, Any]], when_label: str) -> str:
    """One card per prediction: the drawing, what the model said (and how sure), what was drawn and whether the
    model was right, then the model, the time, where it came from, the latency and the record's number."""
    cards = []
    for r in rows:
        thumb = (f'<img src="{r["drawing"]}" width="42" height="42" alt="drawing #{r["#"]}">' if r.get("drawing")
                 else '<span class="dl-log-noimg" aria-hidden="true"></span>')  # fmt: skip
        sure = r.get("sure?") or ""
        conf = r.get("confidence")
        score = "" if conf is None or pd.isna(conf) else f"{conf:.0f}%"
        said = " · ".join(p for p in (sure, score) if p)
        drew = r.get("you drew") or "—"
        answer = ("no answer yet" if drew == "—" else f"you drew {esc(drew)} " + _mark(r.get("right?") or ""))
        latency = r.get("latency")
        meta = [esc(r.get("model") or "?"), f"{esc(_when(r.get('when')))} ({esc(when_label)})", esc(r.get("from") or "—")]
        if latency is not None and not pd.isna(latency):
            meta.append(f"{latency:.0f} ms")
        meta.append(f"#{r['#']}")
        cards.append(
            f'<li>{thumb}<div><div class="dl-log-main"><b>{esc(r.get("predicted"))}</b>'
            f'<span>{esc(said)}</span><span class="dl-log-answer">{answer}</span></div>'
            f'<div class="dl-log-meta">{" · ".join(meta)}</div></div></li>'
        )
    return f'<ul class="dl-log-cards" data-testid="dl-log-cards">{"".join(cards)}</ul>'


def number_cards_html(rows: list[dict[str, Any]]) -> str:
    """One card per read number (the Numbers table's row: its keys are the table's column names)."""
    cards = []
    for r in rows:
        when_key = next(k for k in r if k.startswith("When ("))
        wrote = r.get("You wrote") or ""
        right = {"✓": "✓ right", "✗": "✗ wrong"}.get(r.get("Right?") or "", "")
        answer = "no answer yet" if not wrote else f"you wrote {esc(wrote)} " + _mark(right)
        sure = str(r.get("Sure") or "")
        sure = sure if sure.startswith("not sure") or not sure else f"{sure} sure"  # (the table says it in its header)
        digits = int(r.get("Digits") or 0)
        meta = [esc(r.get("Model") or "?"), f"{esc(r[when_key])} ({esc(when_key[6:-1])})",
                f"{digits} digit{'' if digits == 1 else 's'}", f"No. {esc(r.get('No.'))}"]  # fmt: skip
        cards.append(
            f'<li><div><div class="dl-log-main"><b>{esc(r.get("Read") or "—")}</b><span>{esc(sure)}</span>'
            f'<span class="dl-log-answer">{answer}</span></div>'
            f'<div class="dl-log-meta">{" · ".join(meta)}</div></div></li>'
        )
    return f'<ul class="dl-log-cards" data-testid="dl-number-cards">{"".join(cards)}</ul>'


#: Run once as the log shows another page (`views/history.py`), on a phone only (the grid keeps its height and the pager
#: its place, from 641 px up): the "Prediction log" heading (else the cards) to the top of the screen, under the header.
_PAGE_TURNED_JS = """<script data-turn="%s">(() => {
  if (!window.matchMedia('(max-width: 640px)').matches) return;
  const show = () => {
    const cards = document.querySelector('.st-key-hist_log_cards');
    if (!cards) return;
    const box = cards.closest('[data-testid="stLayoutWrapper"]') || cards;
    let target = box.previousElementSibling;
    while (target && !target.querySelector('[data-testid="stHeading"]')) target = target.previousElementSibling;
    target = target || box;
    target.style.scrollMarginTop = '4.25rem';  // the header's 3.75rem and a little air
    target.scrollIntoView({block: 'start'});
  };
  requestAnimationFrame(show);
  setTimeout(show, 250);  // once the rest of the run has laid out (the page shortens as the old cards go)
})()</script>"""


def page_turned_script(turn: str) -> str:
    """`turn`: differs at every page change, so that the script is a new element and runs again."""
    return _PAGE_TURNED_JS % esc(turn)
