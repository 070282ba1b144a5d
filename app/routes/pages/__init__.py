"""The server-rendered pages (each also an htmx fragment), one module per resource."""
