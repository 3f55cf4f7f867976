"""What a Ray Train worker runs, without Ray: one trial of SFT -> GRPO/DPO -> evaluation
(``run``), its settings, stages, progress reports and memory release, the tiny models, built-in
tasks and rewards. Nothing in this package imports Ray, BoTorch, XGBoost or MLflow."""
