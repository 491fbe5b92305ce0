"""Imported by a worker process (celery -I, tests/campaigns/outbox_worker.py): the stand-in stages of
tests/campaigns/pipeline_doubles.py replace the real ones for the whole process (the exactly-once process
tests, which inject provider failures; see that module's docstring for why they keep stand-ins)."""

from tests.campaigns.pipeline_doubles import install

install()
