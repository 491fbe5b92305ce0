"""The API's JSON renderer."""

from rest_framework import renderers


class JSONRenderer(renderers.JSONRenderer):
    """DRF's renderer writes Chinese as is (UNICODE_JSON), which cannot encode a lone surrogate: JSON may
    carry one as an escape (\\ud800), and an error message that names the bad value or an unknown field
    would then fail with a 500. Such answers fall back to ASCII escapes; every other one is unchanged."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            self.ensure_ascii = True
            try:
                return super().render(data, accepted_media_type, renderer_context)
            finally:
                self.ensure_ascii = False
