"""The only Ray wiring of a job: Ray start-up and checks (``cluster``), the trial as a Ray Tune
trainable and its Ray Train loop (``trainable``, ``train_loop``), the Searcher and Scheduler
adapters (``searcher``, ``scheduler``), the job runner (``job``), promotion, the summary,
``--resume``, ``submit`` and the MLflow callback. Thin adapters only: the search math lives in
:mod:`autopipe.search`, the stop rules in :mod:`autopipe.scheduling`, trials in
:mod:`autopipe.trial`."""
