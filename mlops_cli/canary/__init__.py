"""Canary releases: steps, traffic split, analysis."""
