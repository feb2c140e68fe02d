"""The Streamlit dashboard, and the chart specs it shares with the post-incident reports."""
