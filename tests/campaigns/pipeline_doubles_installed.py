"""Imported by a worker process (celery -I, tests/campaigns/outbox_worker.py): the stand-in stages of
tests/campaigns/pipeline_doubles.py replace the real ones for the whole process."""

from tests.campaigns.pipeline_doubles import install

install()
