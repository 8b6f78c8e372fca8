"""smu_explain app: the router. Run with ``streamlit run app.py``.

Pages (``pages/``): Explore a piece, Compare two models, Train a small model,
Report (HTML export). Each page script also runs on its own (tests use that).
"""

import streamlit as st

st.set_page_config(page_title="smu_explain", page_icon="🎹", layout="wide")

pages = [
    st.Page("pages/explore.py", title="Explore", icon="🎹", default=True),
    st.Page("pages/compare.py", title="Compare", icon="⚖️"),
    st.Page("pages/train.py", title="Train", icon="🏋️"),
    st.Page("pages/report.py", title="Report", icon="📄"),
]
nav = st.navigation(pages)
with st.sidebar:
    st.caption("smu_explain: see which notes a symbolic-music BERT finds hard, "
               "and what its masker decides to hide.")
nav.run()
