"""digitlab's Streamlit app: `streamlit run app.py` (what `digitlab ui` does). Pages live in `views/`."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from digitlab.ui import common

HERE = Path(__file__).parent

st.set_page_config(page_title="digitlab", page_icon=str(HERE / "assets" / "icon.png"), layout="wide")
common.apply_style()
common.session_id()

pages = [
    st.Page(HERE / "views" / "draw.py", title="Draw", icon=":material/draw:", default=True),
    st.Page(HERE / "views" / "number.py", title="Number", icon=":material/pin:", url_path="number"),
    st.Page(
        HERE / "views" / "compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"
    ),
    st.Page(HERE / "views" / "history.py", title="History", icon=":material/history:", url_path="history"),
    st.Page(
        HERE / "views" / "models.py", title="Models", icon=":material/model_training:", url_path="models"
    ),
    st.Page(HERE / "views" / "about.py", title="About", icon=":material/info:", url_path="about"),
]
page = st.navigation(pages, position="top")
# what a page's canvas keeps during an outage (Number kept the writing, but was told "The page reconnects by itself.")
common.health_monitor(kept={"": "drawing", "compare": "drawing", "number": "writing"}.get(page.url_path),
                      canvas={"": "draw", "compare": "compare", "number": "number"}.get(page.url_path))
page.run()
