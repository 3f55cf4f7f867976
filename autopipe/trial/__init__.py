"""Trial execution (runs on Ray Train workers): the SFT -> RL -> evaluation pipeline and the
worker entry point. Nothing in this package imports BoTorch, XGBoost or MLflow."""
