"""The pages of the Streamlit app (run by `st.navigation` in `app.py`, not imported)."""
