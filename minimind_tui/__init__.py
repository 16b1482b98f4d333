"""minimind_tui: the Textual app over the minimind training engine."""
