"""The HTTP surface: FastAPI routes, middleware and error rendering."""
