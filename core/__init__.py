"""ModelDeck: take trained models from experiment to staging to production."""

__version__ = "0.1.0"
