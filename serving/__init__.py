"""The serving runtime: runs a server bundle (see docs/bundle.md) on its own, without the toolkit.

``python -m serving BUNDLE_DIR`` is the entry point; :func:`serving.app.create_app` builds the
ASGI app for tests and other servers. Importing this package builds nothing.
"""
