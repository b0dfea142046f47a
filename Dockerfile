# syntax=docker/dockerfile:1
# recon's one image. Every service of docker-compose.yml runs it with its own command:
#   celery -A workers worker | beat | flower,  recon db upgrade,  recon sandbox.
# Nothing secret is baked in: recon is configured at run time by the RECONCILIATION_*
# environment variables (DESIGN §2); the only key files in the image are the sandbox's public
# demo keys (infra/sandbox/data/keys/README).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --system --gid 10001 recon \
    && useradd --system --uid 10001 --gid recon --home-dir /home/recon --create-home \
        --shell /usr/sbin/nologin recon

WORKDIR /app

# Dependencies first, from pyproject alone: a layer that survives code changes.
COPY pyproject.toml /app/
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --requirement /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The repository (less what .dockerignore leaves out), then recon itself: `pip install .`.
# /app stays owned by root and read-only to the service user; deploy/roster.toml and the
# sandbox data it references are read from here.
COPY . /app
RUN pip install --no-deps /app \
    && rm -rf /app/build /app/*.egg-info

USER recon:recon
EXPOSE 5555 9000
# The default is a worker; docker-compose.yml gives each service its own command.
CMD ["celery", "-A", "workers", "worker", "--loglevel", "INFO"]
