"""Kubeflow pipelines over the bgmrec steps: training (with the Recall@K gate) and new music batches."""
