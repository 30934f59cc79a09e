"""The catalog: SQLAlchemy models, the :class:`Catalog` store, the content store. No torch."""
