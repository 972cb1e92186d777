"""The Streamlit frontend: draw a digit, see it recognized, compare models, explore the history.

`client.py` is the only module that talks to the prediction API; nothing here loads a model.
"""
