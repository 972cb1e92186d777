"""`python -m digitlab.ui.warm_start run app.py ...`: Streamlit's own command line (what `digitlab ui` runs),
with the UI's heavy imports (Altair, pandas, the UI's modules) done in a background thread while the server
starts. A page's script imports them on its first run in the server, so the first visit after a start waited
for them (the canvas 2-4 s later than on the next visits); later runs find them loaded.
"""

from __future__ import annotations

import importlib
import sys
import threading

#: imported ahead; not the canvas component (it registers itself with a running Streamlit app only)
PRELOAD = ("altair", "pandas", "digitlab.ui.common", "digitlab.ui.charts", "digitlab.ui.client",
           "digitlab.ui.answers")  # fmt: skip


def preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S112 -- the page's own import says what is wrong, in the page
            continue


def main() -> None:
    threading.Thread(target=preload, name="digitlab-preload", daemon=True).start()
    try:
        from streamlit.web.cli import main as streamlit_main

        sys.argv = ["streamlit", *sys.argv[1:]]
        streamlit_main(prog_name="streamlit")
    except KeyboardInterrupt:  # Ctrl-C while Streamlit still started (before its own handler): a traceback
        sys.exit(130)


if __name__ == "__main__":
    main()
