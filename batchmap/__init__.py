"""batchmap: download identifAI AI-heatmaps in bulk, paced, resumable and crash-safe."""

__version__ = "0.1.0"
