"""digitlab: handwritten-digit recognition from drawings, served over HTTP and Streamlit."""

__version__ = "0.1.0"
