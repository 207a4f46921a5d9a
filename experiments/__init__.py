"""Experiment scripts and their helpers (run as scripts: ``.venv/bin/python experiments/<name>.py``)."""
