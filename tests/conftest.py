import functools
import importlib.util
import os
import sys

import pytest

# Tests build tiny models from configs; nothing may reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = os.path.dirname(os.path.abspath(__file__))
# The suite's one path set-up: tests/ (models.py, hub_mock.py) and recipes/ (each recipe imports recipe_utils and
# sweep_records as its neighbours, as it does under `python recipes/<name>.py`).
for _path in (os.path.join(os.path.dirname(HERE), "recipes"), HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)


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


@functools.cache
def load_recipe(name: str):
    """A module of ``recipes/`` by its path there (``"sweep"``, ``"lm_pretrain"``, ``"reports/lm_trajectory"``),
    loaded once, as the recipes run it (its neighbours importable)."""
    path = os.path.join(os.path.dirname(HERE), "recipes", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"recipe_{name.replace('/', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def trainer_log(caplog):
    """``caplog`` for transformers' loggers at INFO — where `GammaRegTrainer` logs, as `Trainer` does.

    transformers' root logger does not propagate to Python's root logger (where ``caplog`` listens), so the
    capturing handler is added to it; its verbosity is restored afterwards.
    """
    import logging

    from transformers.utils import logging as hf_logging

    root, level = logging.getLogger("transformers"), hf_logging.get_verbosity()
    # Under CI=true transformers lets its root logger propagate (utils/logging.py), which would hand caplog every
    # record twice; the fixture listens on transformers' logger alone.
    propagate, root.propagate = root.propagate, False
    root.addHandler(caplog.handler)
    hf_logging.set_verbosity_info()
    yield caplog
    root.removeHandler(caplog.handler)
    root.propagate = propagate
    hf_logging.set_verbosity(level)
