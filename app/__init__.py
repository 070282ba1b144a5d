"""The explanation service: FastAPI over `model/`, with a model registry and stored explanations."""
