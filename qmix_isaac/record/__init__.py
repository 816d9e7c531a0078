"""What a run leaves behind: checkpoints, logs (TensorBoard, wandb), learning curves, videos."""
