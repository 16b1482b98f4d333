"""Dialogs and detail screens, one per module."""
