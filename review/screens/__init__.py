"""The dashboard pages, one module each; Streamlit runs them as scripts via st.navigation."""
