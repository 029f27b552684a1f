"""Training: the loop, checkpoints, the update rules (`rules` imports the built-in ones, which registers them)
and the guarded optimiser step they and the objectives share (`stepping`)."""
