"""The REST service and web page over :mod:`modelprint.api` (``modelprint serve``): FastAPI app, security, limits.

:func:`create_app` builds the app for one gallery; :class:`Settings` holds its tokens and limits.
"""

from modelprint.service.app import create_app
from modelprint.service.settings import Settings, load_tokens

__all__ = ["Settings", "create_app", "load_tokens"]
