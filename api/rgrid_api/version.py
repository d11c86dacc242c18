"""The running code's version, reported by /healthz and stored with workers."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("rgrid")
except PackageNotFoundError:  # running from a source tree without install
    VERSION = "0+unknown"
