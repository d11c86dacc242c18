"""The running code's version: `rgrid --version`, /healthz, and what each worker registers."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("rgrid")
except PackageNotFoundError:  # running from a source tree without install
    VERSION = "0+unknown"
