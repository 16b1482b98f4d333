"""Model implementations, one module per family; `minimind.families` says which to build."""
