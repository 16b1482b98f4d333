"""`minimind-tui` entry point (placeholder until the app lands)."""


def main() -> None:
    raise SystemExit("minimind-tui: the app is not built yet; use `minimind train`")
