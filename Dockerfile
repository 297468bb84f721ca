# One image for every role: migrate, worker, admin (docker-compose.yml picks the command).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md alembic.ini ./
COPY tracker_jobs ./tracker_jobs
COPY alembic ./alembic
RUN pip install --no-cache-dir -e .
RUN useradd --system --home /app tracker && chown -R tracker /app
USER tracker
EXPOSE 8000 5055
CMD ["tracker-jobs", "up"]
