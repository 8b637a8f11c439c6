"""The train job: the model, the compiled step, checkpoints, Horovod, and the Trainer that runs them."""
