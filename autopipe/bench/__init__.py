"""The replay benchmark (``autopipe bench``): leave-one-group-out tuning of held-out tasks by
replaying their recorded runs. ``core`` (LOGO loop, regret, cost), ``methods`` (the method
registry), ``replay`` (a task's curves as reports) and ``report`` (tables, plot) are Ray-free;
``ray_runner`` runs each method through a Ray Tune ``Tuner`` (``tune_replay``: the replaying
trainable), and ``direct`` drives the same Searcher and Scheduler objects without a Tuner.
Importing this package imports neither Ray nor XGBoost."""
