"""Runs and experiments as one self-contained HTML file."""
