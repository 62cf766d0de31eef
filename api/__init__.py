"""The HTTP service of taskstore: Azure Batch, AWS HealthOmics and Blaxel dialects and the native API, on one store.

from api import create_app
"""

from .app import create_app
from .credentials import Credential, CredentialStore

__all__ = ["Credential", "CredentialStore", "create_app"]
