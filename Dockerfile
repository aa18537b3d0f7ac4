# The app image: worker, starter, the review workspace, migrations and the set-up one-shots of docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml constraints.txt ./
COPY brightrun/ brightrun/
COPY service/ service/
COPY devtools/ devtools/
COPY models/ models/
COPY workflows/ workflows/
COPY activities/ activities/
COPY web/ web/
COPY worker.py starter.py ./
# constraints.txt pins the whole tree, so the image runs exactly what the tests ran.
RUN pip install -c constraints.txt .
COPY alembic.ini ./
COPY migrations/ migrations/

RUN useradd --system --create-home brightrun
USER brightrun
CMD ["python", "worker.py"]
