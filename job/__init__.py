"""genre-job: train and run film-genre classifiers from posters and overviews."""

__version__ = "0.1.0"
