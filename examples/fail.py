"""Fails the way real scripts do: a message on stderr and a non-zero exit code."""

import sys

print("checking input...")
print("error: the input has no 'price' column", file=sys.stderr)
sys.exit(3)
