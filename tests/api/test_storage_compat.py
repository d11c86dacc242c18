"""minio's private multipart calls that rgrid_api.storage uses still exist
with the arguments it passes. Fails loudly on an upgrade that changed them:
re-check storage.py, then move the pin in pyproject.toml."""

from __future__ import annotations

import inspect

from minio import Minio


def test_multipart_internals_keep_their_signatures() -> None:
    expected = {
        "_create_multipart_upload": ["bucket_name", "object_name", "headers"],
        "_complete_multipart_upload": ["bucket_name", "object_name", "upload_id", "parts"],
        "_abort_multipart_upload": ["bucket_name", "object_name", "upload_id"],
    }
    for name, params in expected.items():
        method = getattr(Minio, name, None)
        assert method is not None, f"minio no longer has Minio.{name}"
        found = list(inspect.signature(method).parameters)[1 : len(params) + 1]
        assert found == params, f"Minio.{name} takes {found}, storage.py passes {params}"
