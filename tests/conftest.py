import os
import sys

import pytest

# Tests build tiny models from configs; nothing may reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(__file__))  # tests/models.py, tests/hub_mock.py


@pytest.fixture
def mock_hub(monkeypatch):
    """`huggingface_hub` talking to an in-memory Hub (tests/hub_mock.py): online mode, no network."""
    import huggingface_hub

    if not hasattr(huggingface_hub, "set_client_factory"):
        pytest.skip("huggingface_hub < 1.0 has no set_client_factory to mock its HTTP layer with")
    from hub_mock import MockHub
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    hub = MockHub()
    # The suite runs with HF_HUB_OFFLINE=1 (above), under which huggingface_hub refuses every request.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    huggingface_hub.set_client_factory(hub.client)
    yield hub
    huggingface_hub.set_client_factory(_http.default_client_factory)
