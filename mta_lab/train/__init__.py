"""Training: typed run configs, the LightningModule, data plumbing, callbacks and the entry point."""
