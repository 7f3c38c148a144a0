"""A fleet on one machine for the tests: Redis servers, a Celery worker, web apps."""
