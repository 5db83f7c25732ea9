"""Fixtures shared by every test package."""

from __future__ import annotations

from tests._s3 import s3_server

__all__ = ["s3_server"]
