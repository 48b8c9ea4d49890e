"""Reporting stage: tables, figures and the one-page model cards."""
