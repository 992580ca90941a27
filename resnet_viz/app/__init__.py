"""Everything that imports Streamlit: session state keys, cached resources, widgets and the
views of background work. Pages (``app_pages/``) use it; nothing in the library imports it."""
