"""The history generator: real SFT -> RL trials over a space-filling design of built-in tasks,
run through the normal job path (:mod:`.generate`), so that the corpus AutoPipe learns from is
recorded exactly as a user's jobs are."""
