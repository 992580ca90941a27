"""Everything that imports Streamlit, split by reason to change: ``state`` (session keys),
``resources`` (what the server process shares and caches), ``widgets`` (pickers, uploads,
buttons, the sidebar, ``literal`` for user text) and ``tasks`` (background computations
with progress). Pages (``app_pages/``) use them; nothing else in the library imports them."""
