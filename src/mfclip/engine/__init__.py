"""The research workflow: training (Lightning), protocols, evaluation, comparison and the demo."""
