"""Text autocompleter: one BentoML service (`service.py`) and its model runtime, no HTTP in the rest."""
