"""``python -m kmesh.dns [flags]``: the same command as ``kmesh dns`` (see ``kmesh.dns.command``)."""

from __future__ import annotations

from kmesh.dns.command import dns


def main(argv: list[str] | None = None) -> None:
    """Entry point: parse ``argv`` (default sys.argv) and run the server."""
    dns.main(args=argv, prog_name="python -m kmesh.dns")


if __name__ == "__main__":
    main()
