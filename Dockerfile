# One image for every role: migrate, worker, admin, listener (docker-compose.yml picks the command).
# The engine is installed from its wheel, as a user's `pip install` does: the migrations travel inside
# the package, and no source tree is left in the image to be imported instead of it.
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY tracker_jobs ./tracker_jobs
COPY alembic ./alembic
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# /app holds only data: the SQLite file and the embedded Redis's folder when no URLs are set.
RUN useradd --system --no-create-home --home-dir /app tracker && mkdir /app && chown tracker:tracker /app
WORKDIR /app
USER tracker
EXPOSE 8000 5055
CMD ["tracker-jobs", "up"]
