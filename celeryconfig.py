"""runner's configuration, in Celery's ``celeryconfig`` style.

Load it with ``app.config_from_object('celeryconfig')``; check it with ``python -m celeryconfig``.
"""

# The embedded SQLite store: no server to run. RabbitMQ users write the seed's
#     broker_url = 'pyamqp://'
#     result_backend = 'rpc://'
# which runner runs as well (see the README: RabbitMQ, and rpc:// results).
broker_url = "sqlite:///.runner/runner.db"
result_backend = "sqlite:///.runner/runner.db"

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "Europe/Oslo"
enable_utc = True

if __name__ == "__main__":
    from runner.config import check_module; raise SystemExit(check_module(__name__))  # noqa: E702, I001
