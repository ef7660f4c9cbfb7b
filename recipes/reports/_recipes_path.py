"""The one place the report scripts reach the recipes' own modules (``recipe_utils``, ``sweep``, ``sst2_bert``):
a script run as ``python recipes/reports/<name>.py`` has ``recipes/reports`` on its path, not ``recipes``.
``import _recipes_path`` first puts ``recipes/`` there. (The recipes themselves need nothing: a script's own
folder is on its path under ``python`` and ``accelerate launch``; the tests add it in ``tests/conftest.py``.)
"""

import os
import sys

RECIPES = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if RECIPES not in sys.path:
    sys.path.insert(0, RECIPES)
