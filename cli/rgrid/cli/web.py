"""`rgrid console`: the web console in a browser, already logged in.

The API hands out a one-time login link (usable once, for 60 s) for the
key this CLI speaks with; the key itself never goes into a URL or a
browser's history.
"""

from __future__ import annotations

from rgrid.cli.connect import connect
from rgrid.cli.console import err, out
from rgrid.cli.parser import Commands


def console(no_open: bool) -> int:
    """Open the web console in a browser, logged in as this CLI's key. The
    login link works once, for a minute (the server's setting); with
    --no-open it is printed as the last line instead (open it yourself, or
    through an SSH tunnel)."""
    with connect(start_local=False) as client:
        link = client.console_link()
        url = client.target.api_url.rstrip("/") + link.path
    if no_open:
        out.print(url, markup=False, highlight=False, soft_wrap=True)
        return 0
    import webbrowser

    lifetime = f"it works once, for {link.expires_in_s:g} s"
    if not webbrowser.open(url):
        err.print(f"no browser could be opened here: open this link ({lifetime}):")
        out.print(url, markup=False, highlight=False, soft_wrap=True)
        return 0
    err.print(f"opened the console in your browser (the link: {lifetime})")
    return 0


def add_commands(commands: Commands) -> None:
    parser = commands.add("console", console)
    parser.add_argument(
        "--no-open", dest="no_open", action="store_true", help="Print the login link instead of opening it."
    )
