"""The JSON API (and the machine endpoints: health, metrics, OpenAPI), one module per resource."""
