"""A small client of a sandbox's `/_sandbox` admin API (tests, benchmarks, demos)."""

from __future__ import annotations

from typing import Any

import httpx


class SandboxAdmin:
    def __init__(self, root_url: str, http: httpx.Client | None = None) -> None:
        self.root_url = root_url.rstrip("/")
        self._http = http or httpx.Client(timeout=30.0)

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        response = self._http.request(method, f"{self.root_url}/_sandbox/{path}", json=payload)
        response.raise_for_status()
        return response.json()

    def settings(self, **values: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "settings", values)
        return result

    def fault(self, kind: str, count: int = 1, path: str | None = None, method: str | None = None) -> None:
        self._call("POST", "faults", {"kind": kind, "count": count, "path": path, "method": method})

    def requests(self, path_contains: str = "", method: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self._call("GET", "requests")
            if path_contains in r["path"] and (method is None or r["method"] == method)
        ]

    def jobs(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "jobs")
        return result

    def table(self, table_id: str, limit: int = 1000) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"tables/{table_id}?limit={limit}")
        return result

    def define_table(self, table_id: str, definition: dict[str, Any]) -> None:
        self._call("PUT", f"tables/{table_id}", definition)

    def expire_tokens(self) -> None:
        self._call("POST", "tokens/expire")

    def close(self) -> None:
        self._http.close()
