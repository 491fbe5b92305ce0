"""Imported by a worker process (celery -I): settings.MESSAGING_PROVIDERS updated from the JSON of the
MESSAGING_TEST_PROVIDERS environment variable, before the registry first reads it. It is how an
integration test points the real provider registry at a real provider writing into its temporary
directory (campaigns.providers.file.FileProvider); every stage of the pipeline stays the real one."""

import json
import os

from django.conf import settings

if os.environ.get("MESSAGING_TEST_PROVIDERS"):
    settings.MESSAGING_PROVIDERS = {
        **settings.MESSAGING_PROVIDERS,
        **json.loads(os.environ["MESSAGING_TEST_PROVIDERS"]),
    }
