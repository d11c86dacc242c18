"""Object storage in memory, with the methods of rgrid_api.storage.Storage:
for testing the control plane's decisions without an S3 server. Presigned
URLs are fake addresses; the tests put bytes in with `put`."""

from __future__ import annotations

import hashlib


class MemoryStorage:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.multipart: dict[str, dict[int, bytes]] = {}

    def put(self, key: str, data: bytes) -> None:
        self.objects[key] = data

    def ensure_bucket(self) -> None:
        return None

    def presign_put(self, key: str) -> str:
        return f"memory://put/{key}"

    def presign_get(self, key: str) -> str:
        return f"memory://get/{key}"

    def start_multipart(self, key: str) -> str:
        upload_id = f"upload-{len(self.multipart) + 1}"
        self.multipart[upload_id] = {}
        return upload_id

    def presign_part(self, key: str, upload_id: str, number: int) -> str:
        return f"memory://part/{key}?uploadId={upload_id}&partNumber={number}"

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        stored = self.multipart.pop(upload_id)
        self.objects[key] = b"".join(stored[n] for n, _etag in sorted(parts))

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self.multipart.pop(upload_id, None)

    def size(self, key: str) -> int | None:
        data = self.objects.get(key)
        return None if data is None else len(data)

    def sizes(self, prefix: str) -> dict[str, int]:
        return {key: len(data) for key, data in self.objects.items() if key.startswith(prefix)}

    def sha256(self, key: str) -> str:
        return hashlib.sha256(self.objects[key]).hexdigest()

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def ping(self) -> bool:
        return True
