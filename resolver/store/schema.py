"""The one declarative base every table of the store is declared on, whatever feature it serves."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass
