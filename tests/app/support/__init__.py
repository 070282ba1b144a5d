"""Helpers the service tests share (no test module imports another): databases, checkpoints,
http, servers, browser, inputs, and a private PostgreSQL cluster."""
