"""Review pages (Streamlit): read storage and the inference endpoint, never torch or kafka."""
